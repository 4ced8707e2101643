"""GET /health: the one route without an API key."""

from __future__ import annotations

from fastapi import APIRouter

from functions.api.dependencies import EnvironmentDep
from functions.api.openapi import Health, answer
from functions.api.responses import JSONResponse

router = APIRouter(tags=["health"])


@router.get("/health", operation_id="health", responses={200: answer(Health)})
async def health(environment: EnvironmentDep) -> JSONResponse:
    return JSONResponse(
        {
            "status": "ok",
            "function": environment.function_name,
            "models_loaded": [str(key) for key in environment.cache.loaded()],
        }
    )
