"""POST /{api_version}/predict/{model}: run a model inline on this function's CPU; a
request over the model's inline limit becomes a job (202), as POST /{api_version}/jobs.

One literal route per declared (API version, model) pair, as on API Gateway: no path
parameters to parse, and each route's OpenAPI entry names its model.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import APIRouter, Request

from functions.api.dependencies import EnvironmentDep, TenantDep
from functions.api.errors import ApiError
from functions.api.openapi import (
    API_KEY_REQUIRED,
    IDEMPOTENCY_KEY,
    KEYED_ERRORS,
    LIFECYCLE_HEADERS,
    PREDICTIONS,
    JobAccepted,
    answer,
    errors,
    job_links,
    predict_body,
)
from functions.api.responses import JSONResponse
from functions.api.routes.jobs import enqueue
from functions.api.versioning import lifecycle, public_prefix
from functions.runtime.environment import ExecutionEnvironment
from functions.runtime.observability import logger, prediction_metrics
from functions.runtime.tenants import Tenant

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from stratoserve.declaration import Declaration


def router(declaration: Declaration) -> APIRouter:
    routes = APIRouter(tags=["predict"], dependencies=API_KEY_REQUIRED)
    for api_version, spec in declaration.api.items():
        for model in spec.models:
            task = declaration.models[model].task
            routes.add_api_route(
                f"/{api_version}/predict/{model}",
                _endpoint(api_version, model),
                methods=["POST"],
                name=f"predict {model} ({api_version})",
                operation_id=f"predict_{model}_{api_version}",
                summary=f"Predict with {model} ({task})",
                responses={
                    200: answer(PREDICTIONS[task], "x-model-version", *LIFECYCLE_HEADERS),
                    202: answer(
                        JobAccepted,
                        "location",
                        *LIFECYCLE_HEADERS,
                        description="Too many inputs for the inline path: a job",
                        links=job_links(api_version),
                    ),
                    **errors(400, 413, 422, *KEYED_ERRORS),
                },
                openapi_extra={
                    "requestBody": predict_body(task),
                    "parameters": [IDEMPOTENCY_KEY],
                },
            )
    return routes


def _endpoint(api_version: str, model: str) -> Callable[..., Awaitable[JSONResponse]]:
    async def endpoint(
        request: Request, environment: EnvironmentDep, tenant: TenantDep
    ) -> JSONResponse:
        return await predict(api_version, model, request, environment, tenant)

    return endpoint


async def predict(
    api_version: str,
    model: str,
    request: Request,
    environment: ExecutionEnvironment,
    tenant: Tenant,
) -> JSONResponse:
    key = environment.resolve(api_version, model)
    plan = environment.plan_of(tenant)
    if plan is not None and not plan.allows(model):
        raise ApiError(403, f"plan {tenant.plan} does not include model {model}")
    inputs = _inputs(await request.body())
    if len(inputs) > environment.declaration.routing_for(model).inline_max_inputs:
        # Too big to answer within the gateway's timeout: a job, answered 202 at once.
        return await enqueue(api_version, model, inputs, request, environment, tenant)
    with environment.cache.use(key) as loaded:
        checked = loaded.runner.check(inputs)
        started = time.perf_counter()
        # A model may refuse inputs it can only compute nonsense from (InputError, a 422).
        outputs = loaded.runner.run(checked)
        model_ms = (time.perf_counter() - started) * 1000
    logger.info(
        "predict",
        extra={
            **prediction_metrics(key.name, key.version, model_ms, tenant.name),
            "api_version": api_version,
            "inputs": len(inputs),
        },
    )
    headers, deprecation = lifecycle(
        environment.declaration,
        api_version,
        request.url.path,
        prefix=public_prefix(request),
        model=model,
    )
    body: dict[str, Any] = {
        "outputs": outputs,
        "model": {"name": key.name, "version": key.version},
        "api_version": api_version,
    }
    if deprecation:
        body["deprecation"] = deprecation
    headers["x-model-version"] = key.version
    # Compute time for the caller and for metering (the local gateway meters it per tenant).
    headers["server-timing"] = f"model;dur={model_ms:.3f}"
    return JSONResponse(body, headers=headers)


def _inputs(raw: bytes) -> list[Any]:
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise ApiError(400, f"request body is not valid JSON: {error}") from None
    if not isinstance(payload, dict) or "inputs" not in payload:
        raise ApiError(422, 'request body must be a JSON object with an "inputs" list')
    inputs = payload["inputs"]
    if not isinstance(inputs, list):
        raise ApiError(422, '"inputs" must be a list')
    if not inputs:
        raise ApiError(422, '"inputs" must not be empty')
    return inputs
