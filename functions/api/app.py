"""`create_app()`: the FastAPI app every HTTP-facing function runs behind Mangum."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from fastapi import FastAPI

from functions.api.errors import install_error_handlers
from functions.api.routes import health, models, predict
from functions.runtime.observability import logger

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from stratoserve.declaration import Declaration


class RequestIdMiddleware:
    """Tags each response (errors included) and each log line with the request id: API
    Gateway's own `requestContext.requestId` when there is one, so the id a client sees
    is the id in the gateway's and the function's logs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        event = scope.get("aws.event") or {}
        request_id = (event.get("requestContext") or {}).get("requestId") or str(uuid.uuid4())
        logger.append_keys(request_id=request_id)
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        await self.app(scope, receive, send_with_id)


def create_app(declaration: Declaration) -> FastAPI:
    """The app's routes are literal, one per declared resource, like API Gateway's."""
    app = FastAPI(
        title=declaration.project.name,
        summary="AI inference API: predict with declared ONNX models.",
        version="1",
    )
    app.include_router(health.router)
    app.include_router(models.router(declaration))
    app.include_router(predict.router(declaration))
    install_error_handlers(app, declaration)
    app.add_middleware(RequestIdMiddleware)
    return app
