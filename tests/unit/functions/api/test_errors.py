"""Domain errors become HTTP answers in one table (functions.api.errors.DOMAIN_ERRORS):
each answer pinned here byte for byte, as the routes gave it when each translated its own."""

from __future__ import annotations

from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from starlette.testclient import TestClient

from functions.api.app import create_app
from functions.api.errors import DOMAIN_ERRORS
from functions.runtime.callbacks import CallbackRefused
from functions.runtime.environment import UnknownModelError
from functions.runtime.job_service import IdempotencyConflict, JobsUnavailable
from functions.runtime.job_store import JobNotCancellable
from functions.runtime.models import InputError, OverflowingInputError
from functions.runtime.routing import GpuJobsNotInPlan, JobTooLarge, RouteRefused
from functions.runtime.tenants import TenantLookupError

if TYPE_CHECKING:
    from stratoserve.declaration import Declaration

RUNNING: Any = SimpleNamespace(job_id="j-1", status="running")

ANSWERS = [
    (UnknownModelError("unknown model nope in v1 (available: digits)"), 404,
     "unknown model nope in v1 (available: digits)"),
    (InputError("inputs[0]: expected a string"), 422, "inputs[0]: expected a string"),
    # A subclass gets its parent's answer: handlers are looked up along the MRO.
    (OverflowingInputError(2), 422,
     "inputs[2]: values too large for this model (its probabilities overflow)"),
    (CallbackRefused("must use https"), 422, '"callback_url" must use https'),
    (IdempotencyConflict("this Idempotency-Key was used for a different request"), 422,
     "this Idempotency-Key was used for a different request"),
    (GpuJobsNotInPlan("plan free does not include GPU jobs"), 403,
     "plan free does not include GPU jobs"),
    (JobTooLarge("1001 inputs is more than a GPU job may carry"), 413,
     "1001 inputs is more than a GPU job may carry"),
    (JobNotCancellable(RUNNING), 409,
     "job j-1 is not queued (status: running); only a queued job can be cancelled"),
    (JobsUnavailable("the job store refused the job (AWS error X)"), 503,
     "the job store refused the job (AWS error X); try again"),
    (JobsUnavailable("jobs are not set up for this function", retryable=False), 503,
     "jobs are not set up for this function"),
    (TenantLookupError("AccessDeniedException: ..."), 503,
     "could not identify the caller's tenant; try again"),
]  # fmt: skip


def _client(declaration: Declaration, error: Exception) -> TestClient:
    app = create_app(declaration)

    async def boom() -> None:
        raise error

    app.add_api_route("/boom", boom)
    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize(("error", "status", "message"), ANSWERS, ids=lambda value: str(value)[:20])
def test_a_domain_error_gets_its_answer(
    declaration: Declaration, error: Exception, status: int, message: str
) -> None:
    response = _client(declaration, error).get("/boom")

    assert response.status_code == status
    assert response.content == orjson.dumps({"message": message})
    assert response.headers["content-type"] == "application/json"
    assert "x-request-id" in response.headers
    assert "retry-after" not in response.headers


def test_every_type_in_the_table_is_pinned() -> None:
    assert set(DOMAIN_ERRORS) <= {type(error) for error, _, _ in ANSWERS}


@pytest.mark.parametrize("error", [RouteRefused("neither"), LookupError("x"), ValueError("x")])
def test_an_error_the_table_does_not_name_is_a_fixed_500(
    declaration: Declaration, error: Exception
) -> None:
    response = _client(declaration, error).get("/boom")

    assert response.status_code == 500
    assert response.content == orjson.dumps({"message": "Internal server error"})
