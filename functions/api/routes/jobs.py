"""/{api_version}/jobs: submit work too big for the inline path, follow it, cancel it.

POST answers 202 at once with the job id; the worker runs the job from the SQS queue.
Jobs are stored per tenant: another tenant's job id is a 404, exactly like an id that
does not exist.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from functions.api.dependencies import EnvironmentDep, TenantDep
from functions.api.errors import ApiError
from functions.api.openapi import (
    API_KEY_REQUIRED,
    IDEMPOTENCY_KEY,
    JOB_ID,
    KEYED_ERRORS,
    LIFECYCLE_HEADERS,
    JobAccepted,
    JobView,
    answer,
    errors,
    job_links,
    submit_body,
)
from functions.api.responses import JSONResponse
from functions.api.versioning import lifecycle, public_prefix
from functions.runtime.callbacks import check_destination
from functions.runtime.job_service import JobService
from functions.runtime.job_view import job_view
from functions.runtime.models import check_inputs
from functions.runtime.observability import logger
from functions.runtime.routing import route_job

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from functions.runtime.environment import ExecutionEnvironment
    from functions.runtime.jobs import Job
    from functions.runtime.tenants import Tenant
    from stratoserve.declaration import Declaration

IDEMPOTENCY_HEADER = "idempotency-key"


def router(declaration: Declaration) -> APIRouter:
    routes = APIRouter(tags=["jobs"], dependencies=API_KEY_REQUIRED)
    for api_version, spec in declaration.api.items():
        tasks = {model: declaration.models[model].task for model in spec.models}
        routes.add_api_route(
            f"/{api_version}/jobs",
            _submit_endpoint(api_version),
            methods=["POST"],
            status_code=202,
            name=f"submit job ({api_version})",
            operation_id=f"submit_job_{api_version}",
            summary="Submit a job: 202 with its id at once; the worker runs it",
            responses={
                202: answer(
                    JobAccepted,
                    "location",
                    *LIFECYCLE_HEADERS,
                    description="The job is queued: follow its status_url",
                    links=job_links(api_version),
                ),
                **errors(400, 404, 413, 422, *KEYED_ERRORS),
            },
            openapi_extra={"requestBody": submit_body(tasks), "parameters": [IDEMPOTENCY_KEY]},
        )
        routes.add_api_route(
            f"/{api_version}/jobs/{{job_id}}",
            _show_endpoint(api_version),
            methods=["GET"],
            name=f"job ({api_version})",
            operation_id=f"get_job_{api_version}",
            summary="A job's status, and its result once it has succeeded",
            responses={
                200: answer(JobView, *LIFECYCLE_HEADERS),
                **errors(404, *KEYED_ERRORS),
            },
            openapi_extra={"parameters": [JOB_ID]},
        )
        routes.add_api_route(
            f"/{api_version}/jobs/{{job_id}}",
            _cancel_endpoint(api_version),
            methods=["DELETE"],
            name=f"cancel job ({api_version})",
            operation_id=f"cancel_job_{api_version}",
            summary="Cancel a job that is still queued",
            responses={
                200: answer(JobView, *LIFECYCLE_HEADERS),
                **errors(404, 409, *KEYED_ERRORS),
            },
            openapi_extra={"parameters": [JOB_ID]},
        )
    return routes


def _submit_endpoint(api_version: str) -> Callable[..., Awaitable[JSONResponse]]:
    async def submit(
        request: Request, environment: EnvironmentDep, tenant: TenantDep
    ) -> JSONResponse:
        payload = _payload(await request.body())
        model = payload.get("model")
        if not isinstance(model, str) or not model:
            raise ApiError(422, '"model" must be the name of a model')
        callback_url = payload.get("callback_url")
        if callback_url is not None:
            if not isinstance(callback_url, str):
                raise ApiError(422, '"callback_url" must be a URL string')
            # As the worker checks it before each POST: the host resolved, every address
            # public (a lookup blocks: off the event loop).
            await run_in_threadpool(
                check_destination,
                callback_url,
                allow_loopback=environment.settings.local_stack,
                resolve=environment.resolve_host,
            )
        return await enqueue(
            api_version,
            model,
            payload.get("inputs"),
            request,
            environment,
            tenant,
            callback_url=callback_url,
        )

    return submit


async def enqueue(
    api_version: str,
    model: str,
    inputs: Any,
    request: Request,
    environment: ExecutionEnvironment,
    tenant: Tenant,
    *,
    callback_url: str | None = None,
) -> JSONResponse:
    """Check a job and queue it: 202 with its id (also the answer to a predict request too
    big for the inline path)."""
    declaration = environment.declaration
    version = environment.served_version(api_version, model)
    plan = environment.plan_of(tenant)
    if plan is not None and not plan.allows(model):
        raise ApiError(403, f"plan {tenant.plan} does not include model {model}")
    if not isinstance(inputs, list):
        raise ApiError(422, '"inputs" must be a list')
    if not inputs:
        raise ApiError(422, '"inputs" must not be empty')
    check_inputs(declaration.models[model], inputs)
    inputs_json = orjson.dumps(inputs)
    route = route_job(
        declaration,
        model,
        plan=plan,
        plan_name=tenant.plan,
        inputs=len(inputs),
        payload_bytes=len(inputs_json),
    )
    idempotency_key = _idempotency_key(request)
    submission = environment.jobs.submit(
        tenant=tenant.id,
        api_version=api_version,
        model=model,
        version=version,
        inputs=inputs,
        correlation_id=request.state.request_id,
        callback_url=callback_url,
        idempotency_key=idempotency_key,
        backend=route.backend,
        inputs_json=inputs_json,
        secret_version=tenant.secret_version,
    )
    job = submission.job
    logger.info(
        "job accepted",
        extra={
            "job_id": job.job_id,
            "model": model,
            "version": version,
            "inputs": len(inputs),
            "backend": job.backend,
            "replayed": submission.replayed,
        },
    )
    status_url = f"{public_prefix(request)}/{api_version}/jobs/{job.job_id}"
    headers, deprecation = lifecycle(
        declaration, api_version, request.url.path, prefix=public_prefix(request), model=model
    )
    headers["location"] = status_url
    if submission.replayed:
        headers["idempotent-replayed"] = "true"
    body: dict[str, Any] = {"job_id": job.job_id, "status": job.status, "status_url": status_url}
    if deprecation:
        body["deprecation"] = deprecation
    return JSONResponse(body, status_code=202, headers=headers)


def _show_endpoint(api_version: str) -> Callable[..., Awaitable[JSONResponse]]:
    return _job_endpoint(api_version, JobService.get)


def _cancel_endpoint(api_version: str) -> Callable[..., Awaitable[JSONResponse]]:
    return _job_endpoint(api_version, JobService.cancel)


def _job_endpoint(
    api_version: str, act: Callable[[JobService, str, str], Job | None]
) -> Callable[..., Awaitable[JSONResponse]]:
    """GET or DELETE one of the caller's jobs: `act(jobs, tenant, job_id)` answers with the
    job, or None when the tenant has no such job (404)."""

    async def endpoint(
        request: Request, environment: EnvironmentDep, tenant: TenantDep
    ) -> JSONResponse:
        jobs = environment.jobs
        job_id = _job_id(request)
        job = act(jobs, tenant.id, job_id)
        if job is None:
            raise ApiError(404, f"no job {job_id}")
        prefix = public_prefix(request)
        headers, _ = lifecycle(
            environment.declaration, api_version, request.url.path, prefix=prefix
        )
        return JSONResponse(job_view(job, jobs.store, prefix=prefix), headers=headers)

    return endpoint


def _job_id(request: Request) -> str:
    """The path's job id; one that stratoserve cannot have issued (not a UUID) is a 404
    at once, like any unknown id, never a question to DynamoDB (which refuses long keys)."""
    job_id: str = request.path_params["job_id"]
    try:
        uuid.UUID(job_id)
    except ValueError:
        raise ApiError(404, f"no job {job_id[:64]}") from None
    return job_id


def _payload(raw: bytes) -> dict[str, Any]:
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise ApiError(400, f"request body is not valid JSON: {error}") from None
    if not isinstance(payload, dict):
        raise ApiError(422, 'request body must be a JSON object with "model" and "inputs"')
    unknown = sorted(set(payload) - {"model", "inputs", "callback_url"})
    if unknown:
        raise ApiError(422, f"unknown field(s): {', '.join(unknown)}")
    return payload


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    if not 1 <= len(key) <= 255 or not key.isprintable():
        raise ApiError(400, "Idempotency-Key must be 1 to 255 printable characters")
    return key
