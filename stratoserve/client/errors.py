"""The API's error answers as exceptions, each carrying the API's own message: the same
bytes whether the answer came from API Gateway (403, 429) or from a function (4xx)."""

from __future__ import annotations

from typing import Any


class StratoserveError(Exception):
    """An answer the API gave instead of a result; `status` and `body` as received."""

    def __init__(self, status: int, message: str, body: Any = None) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.body = body


class BadRequestError(StratoserveError):
    """400: the request could not be read (malformed JSON)."""


class ForbiddenError(StratoserveError):
    """403: a missing or unknown key, a model the plan does not allow, or no such route."""


class NotFoundError(StratoserveError):
    """404: no such API version, model or job (another tenant's job is one too)."""


class ConflictError(StratoserveError):
    """409: the job can no longer be cancelled (it runs, or it has finished)."""


class PayloadTooLargeError(StratoserveError):
    """413: more inputs or bytes than the route takes."""


class UnprocessableError(StratoserveError):
    """422: the inputs have the wrong shape or type; the message names the input."""


class ThrottledError(StratoserveError):
    """429 Too Many Requests: over the plan's rate or burst; retrying later succeeds."""


class QuotaExceededError(StratoserveError):
    """429 Limit Exceeded: the plan's quota for this period is used up."""


class ServerError(StratoserveError):
    """5xx: the service failed; the request may be retried."""


class JobFailedError(StratoserveError):
    """The job ended `failed`; `message` is its reason."""


class JobCancelledError(StratoserveError):
    """The job ended `cancelled` (by `Job.cancel()` or another caller): it has no outputs."""


class JobTimeoutError(TimeoutError):
    """Job.wait gave up before the job finished (the job itself goes on)."""


_BY_STATUS: dict[int, type[StratoserveError]] = {
    400: BadRequestError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: UnprocessableError,
}


def error_for(status: int, body: Any) -> StratoserveError:
    """The exception for an error answer, its message taken from the body's `message`
    (API Gateway's and the functions' own key) or `detail`."""
    message = ""
    if isinstance(body, dict):
        found = body.get("message") or body.get("detail") or body.get("error")
        message = found if isinstance(found, str) else str(found or "")
    elif isinstance(body, str):
        message = body
    message = message or f"HTTP {status}"
    if status == 429:
        kind: type[StratoserveError] = (
            QuotaExceededError if message == "Limit Exceeded" else ThrottledError
        )
    elif status >= 500:
        kind = ServerError
    else:
        kind = _BY_STATUS.get(status, StratoserveError)
    return kind(status, message, body)
