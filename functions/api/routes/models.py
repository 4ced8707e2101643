"""GET /{api_version}/models: what an API version serves (one literal route per version)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request

from functions.api.dependencies import EnvironmentDep, TenantDep
from functions.api.openapi import (
    API_KEY_REQUIRED,
    KEYED_ERRORS,
    LIFECYCLE_HEADERS,
    ModelList,
    answer,
    errors,
)
from functions.api.responses import JSONResponse
from functions.api.versioning import lifecycle, public_prefix

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from stratoserve.declaration import Declaration


def router(declaration: Declaration) -> APIRouter:
    routes = APIRouter(tags=["models"], dependencies=API_KEY_REQUIRED)
    for api_version in declaration.api:
        routes.add_api_route(
            f"/{api_version}/models",
            _endpoint(api_version),
            methods=["GET"],
            name=f"models ({api_version})",
            operation_id=f"list_models_{api_version}",
            summary=f"Models served by {api_version}",
            responses={200: answer(ModelList, *LIFECYCLE_HEADERS), **errors(*KEYED_ERRORS)},
        )
    return routes


def _endpoint(api_version: str) -> Callable[..., Awaitable[JSONResponse]]:
    async def list_models(
        request: Request, environment: EnvironmentDep, tenant: TenantDep
    ) -> JSONResponse:
        declaration = environment.declaration
        plan = environment.plan_of(tenant)
        prefix = public_prefix(request)
        models = [
            {
                "name": name,
                "task": declaration.models[name].task,
                "version": version,
                "description": declaration.models[name].description,
                "predict_url": f"{prefix}/{api_version}/predict/{name}",
            }
            for name, version in declaration.api[api_version].models.items()
            if plan is None or plan.allows(name)
        ]
        headers, deprecation = lifecycle(declaration, api_version, request.url.path, prefix=prefix)
        body: dict[str, Any] = {"api_version": api_version, "models": models}
        if deprecation:
            body["deprecation"] = deprecation
        return JSONResponse(body, headers=headers)

    return list_models
