"""`create_app()`: the FastAPI app every HTTP-facing function runs behind Mangum."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from fastapi import FastAPI

from functions.api.errors import error_response, install_error_handlers
from functions.api.routes import health, jobs, models, predict
from functions.runtime.observability import logger

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from stratoserve.declaration import Declaration


class RequestContextMiddleware:
    """What every request gets, errors included:

    - the request id on the response and on every log line: API Gateway's own
      `requestContext.requestId` when there is one, so the id a client sees is the id in
      the gateway's and the function's logs;
    - a trailing slash ignored, as API Gateway matches resources;
    - an unexpected exception answered 500 with a fixed message, logged as JSON once, and
      not re-raised (Starlette's outer error middleware would re-raise it to Mangum,
      which logs a plain-text traceback and drops the request id).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        event = scope.get("aws.event") or {}
        request_id = (event.get("requestContext") or {}).get("requestId") or str(uuid.uuid4())
        logger.append_keys(request_id=request_id)
        # The request id is also a job's correlation id: it follows the job through SQS.
        scope.setdefault("state", {})["request_id"] = request_id
        header = (b"x-request-id", request_id.encode())
        if len(scope["path"]) > 1 and scope["path"].endswith("/"):
            scope = {**scope, "path": scope["path"].rstrip("/") or "/"}
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as error:
            logger.exception("unhandled error", extra={"error_type": type(error).__name__})
            if not started:
                response = error_response(500, "Internal server error")
                await response(scope, receive, send_with_id)


def create_app(declaration: Declaration) -> FastAPI:
    """The app's routes are literal, one per declared resource, like API Gateway's."""
    app = FastAPI(
        title=declaration.project.name,
        summary="AI inference API: predict with declared ONNX models, inline or as jobs.",
        version="1",
        # A redirect would point at the function's own view of the URL (no stage prefix,
        # wrong scheme); the middleware drops trailing slashes instead.
        redirect_slashes=False,
    )
    app.include_router(health.router)
    app.include_router(models.router(declaration))
    app.include_router(predict.router(declaration))
    app.include_router(jobs.router(declaration))
    install_error_handlers(app, declaration)
    app.add_middleware(RequestContextMiddleware)
    return app
