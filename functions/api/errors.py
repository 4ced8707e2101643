"""Every error leaves as JSON `{"message": ...}` with a 4xx that says what is wrong (an
unexpected failure becomes a fixed 500 in `functions.api.app.RequestContextMiddleware`).

Domain code raises typed errors and knows nothing of HTTP; `DOMAIN_ERRORS` below is the one
place that says what each becomes. Starlette finds an exception's handler along its MRO, so
a subclass gets its parent's answer unless the table names it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from functions.api.responses import JSONResponse
from functions.runtime.callbacks import CallbackRefused
from functions.runtime.environment import UnknownModelError
from functions.runtime.job_service import IdempotencyConflict, JobsUnavailable
from functions.runtime.job_store import JobNotCancellable
from functions.runtime.models import InputError
from functions.runtime.observability import logger
from functions.runtime.routing import GpuJobsNotInPlan, JobTooLarge
from functions.runtime.tenants import TenantLookupError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from fastapi import FastAPI, Request

    from stratoserve.declaration import Declaration


class ApiError(Exception):
    """An answer decided by the HTTP layer itself (a malformed request, a missing key)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class ErrorAnswer:
    """How the API answers one type of domain error."""

    status: int
    message: Callable[[Exception], str] = str
    """The body's message, from the error (by default the error's own message)."""
    log: str | None = None
    """A failure on our side rather than the caller's: logged as an error, with this text."""


def _try_again_if_retryable(error: Exception) -> str:
    assert isinstance(error, JobsUnavailable)
    return f"{error}; try again" if error.retryable else str(error)


DOMAIN_ERRORS: dict[type[Exception], ErrorAnswer] = {
    UnknownModelError: ErrorAnswer(404),
    InputError: ErrorAnswer(422),
    CallbackRefused: ErrorAnswer(422, lambda error: f'"callback_url" {error}'),
    IdempotencyConflict: ErrorAnswer(422),
    GpuJobsNotInPlan: ErrorAnswer(403),
    JobTooLarge: ErrorAnswer(413),
    JobNotCancellable: ErrorAnswer(409),
    JobsUnavailable: ErrorAnswer(503, _try_again_if_retryable, log="jobs unavailable"),
    TenantLookupError: ErrorAnswer(
        503,
        lambda _: "could not identify the caller's tenant; try again",
        log="tenant lookup failed",
    ),
}


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"message": message}, status_code=status)


async def _api_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ApiError)
    return error_response(error.status, error.message)


def _domain_error_handler(
    answer: ErrorAnswer,
) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    async def domain_error(_: Request, error: Exception) -> JSONResponse:
        if answer.log is not None:
            logger.error(
                answer.log, extra={"error_type": type(error).__name__, "error": str(error)}
            )
        return error_response(answer.status, answer.message(error))

    return domain_error


def _not_found(declaration: Declaration, path: str) -> str:
    """Routes are literal, so a 404 says which part of the path matched nothing."""
    parts = path.strip("/").split("/")
    if len(parts) == 3 and parts[1] == "predict":
        try:
            declaration.served_version(parts[0], parts[2])
        except LookupError as error:
            return str(error)
    if parts[0] not in declaration.api and parts[0][:1] == "v" and parts[0][1:].isdigit():
        return f"unknown API version {parts[0]} (declared: {', '.join(declaration.api)})"
    return f"Not Found: no resource {path}"


def _http_error_handler(
    declaration: Declaration,
) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    async def http_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, HTTPException)
        if error.status_code == 404:
            return error_response(404, _not_found(declaration, request.url.path))
        return error_response(error.status_code, str(error.detail))

    return http_error


async def _validation_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return error_response(422, f"{where}: {first['msg']}")


def install_error_handlers(app: FastAPI, declaration: Declaration) -> None:
    for error_type, answer in DOMAIN_ERRORS.items():
        app.add_exception_handler(error_type, _domain_error_handler(answer))
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(HTTPException, _http_error_handler(declaration))
    app.add_exception_handler(RequestValidationError, _validation_error)
