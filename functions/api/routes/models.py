"""GET /{api_version}/models: what this API version serves."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from functions.api.dependencies import EnvironmentDep
from functions.api.errors import ApiError
from functions.api.versioning import lifecycle

router = APIRouter(tags=["models"])


@router.get("/{api_version}/models")
async def list_models(
    api_version: str, request: Request, environment: EnvironmentDep
) -> JSONResponse:
    declaration = environment.declaration
    api = declaration.api.get(api_version)
    if api is None:
        known = ", ".join(declaration.api)
        raise ApiError(404, f"unknown API version {api_version} (declared: {known})")
    models = [
        {
            "name": name,
            "task": declaration.models[name].task,
            "version": version,
            "description": declaration.models[name].description,
            "predict_url": f"/{api_version}/predict/{name}",
        }
        for name, version in api.models.items()
    ]
    headers, deprecation = lifecycle(declaration, api_version, request.url.path)
    body: dict[str, Any] = {"api_version": api_version, "models": models}
    if deprecation:
        body["deprecation"] = deprecation
    return JSONResponse(body, headers=headers)
