"""Every error leaves as JSON `{"message": ...}` with a 4xx that says what is wrong (an
unexpected failure becomes a fixed 500 in `functions.api.app.RequestContextMiddleware`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from functions.api.responses import JSONResponse

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from fastapi import FastAPI, Request

    from stratoserve.declaration import Declaration


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"message": message}, status_code=status)


async def _api_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ApiError)
    return error_response(error.status, error.message)


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
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(HTTPException, _http_error_handler(declaration))
    app.add_exception_handler(RequestValidationError, _validation_error)
