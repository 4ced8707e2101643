"""The local Lambda Invoke API in front of real local environments: Lambda's answers for a
result, a function error, a crash and a timeout; its service errors; a throttle, never a
wait, when every environment is busy."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from stratoserve.local.environments import FunctionConfig, FunctionPool
from stratoserve.local.lambda_api import LambdaApi
from tests.conftest import ROOT

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

HANDLERS = "tests.integration.stratoserve.local.handlers"
TOKEN = "the-stack-token-of-this-test"
BASE_URL = "http://127.0.0.1:9001"  # a loopback Host: the API refuses any other
FUNCTIONS = {"echo": "echo", "fails": "raise_error", "crash": "crash", "sleep": "sleep"}


def _with_api(scenario: Callable[[httpx.AsyncClient, LambdaApi], Awaitable[Any]]) -> Any:
    async def run() -> Any:
        pools = {
            name: FunctionPool(
                FunctionConfig(name, f"{HANDLERS}.{handler}", 256, timeout_s=1, max_environments=1),
                cwd=ROOT,
            )
            for name, handler in FUNCTIONS.items()
        }
        api = LambdaApi(pools, token=TOKEN)
        transport = httpx.ASGITransport(app=api)
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        try:
            async with httpx.AsyncClient(
                transport=transport, base_url=BASE_URL, headers=bearer
            ) as client:
                return await scenario(client, api)
        finally:
            await api.close()
            await asyncio.gather(*(pool.close() for pool in pools.values()))

    return asyncio.run(run())


def _invoke(
    client: httpx.AsyncClient, function: str, payload: bytes = b"{}", **headers: str
) -> Awaitable[httpx.Response]:
    return client.post(
        f"/2015-03-31/functions/{function}/invocations", content=payload, headers=headers
    )


@pytest.mark.parametrize(
    "function",
    [
        "echo",
        "echo:live",
        "arn:aws:lambda:us-east-1:123456789012:function:echo",
        "arn:aws:lambda:us-east-1:123456789012:function:echo:live",
        "123456789012:function:echo",
    ],
)
def test_a_function_by_name_qualifier_or_arn_answers_its_result(function: str) -> None:
    response = _with_api(lambda client, _: _invoke(client, function, b'{"n": 1}'))

    assert response.status_code == 200
    assert response.json()["event"] == {"n": 1}
    assert response.json()["function"] == "echo"
    assert response.headers["x-amz-executed-version"] == "$LATEST"
    assert "x-amz-function-error" not in response.headers


@pytest.mark.parametrize(
    ("function", "payload", "error_type", "message"),
    [
        ("fails", b"{}", "ValueError", "bad things"),
        ("crash", b"{}", "Runtime.ExitError", "the environment exited"),
        ("sleep", b'{"seconds": 3}', "Sandbox.Timedout", "task timed out after 1 s"),
    ],
)
def test_a_function_that_fails_is_200_with_the_function_error(
    function: str, payload: bytes, error_type: str, message: str
) -> None:
    response = _with_api(lambda client, _: _invoke(client, function, payload))

    assert response.status_code == 200
    assert response.headers["x-amz-function-error"] == "Unhandled"
    assert response.json()["errorType"] == error_type
    assert message in response.json()["errorMessage"]


@pytest.mark.parametrize(
    ("function", "payload", "headers", "status", "error_type"),
    [
        ("nope", b"{}", {}, 404, "ResourceNotFoundException"),
        ("arn:aws:s3:::bucket", b"{}", {}, 404, "ResourceNotFoundException"),
        ("echo", b"not json", {}, 400, "InvalidRequestContentException"),
        (
            "echo",
            b"{}",
            {"x-amz-invocation-type": "Later"},
            400,
            "InvalidParameterValueException",
        ),
    ],
)
def test_lambdas_service_errors_invoke_nothing(
    function: str, payload: bytes, headers: dict[str, str], status: int, error_type: str
) -> None:
    async def scenario(client: httpx.AsyncClient, api: LambdaApi) -> tuple[httpx.Response, int]:
        response = await _invoke(client, function, payload, **headers)
        return response, sum(pool.cold_starts for pool in api.pools.values())

    response, started = _with_api(scenario)

    assert response.status_code == status
    assert response.headers["x-amzn-errortype"] == error_type
    assert response.json()["Type"] == "User"
    assert started == 0


def test_a_function_whose_environments_are_all_busy_is_throttled_at_once() -> None:
    async def scenario(client: httpx.AsyncClient, _: LambdaApi) -> list[httpx.Response]:
        busy = asyncio.create_task(_invoke(client, "sleep", b'{"seconds": 0.5}'))
        await asyncio.sleep(0.05)  # the first invocation holds the only environment
        throttled = await _invoke(client, "sleep", b'{"seconds": 0}')
        return [await busy, throttled]

    busy, throttled = _with_api(scenario)

    assert busy.status_code == 200
    assert throttled.status_code == 429
    assert throttled.headers["x-amzn-errortype"] == "TooManyRequestsException"
    assert throttled.json()["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"


def test_an_event_invocation_is_accepted_then_run_and_a_dry_run_only_checked() -> None:
    async def scenario(client: httpx.AsyncClient, api: LambdaApi) -> list[int]:
        dry = await _invoke(client, "echo", **{"x-amz-invocation-type": "DryRun"})
        started_by_dry_run = api.pools["echo"].cold_starts
        queued = await _invoke(client, "echo", **{"x-amz-invocation-type": "Event"})
        for _ in range(200):  # its environment cold-starts in the background
            if api.pools["echo"].cold_starts:
                break
            await asyncio.sleep(0.05)
        started = api.pools["echo"].cold_starts
        return [dry.status_code, started_by_dry_run, queued.status_code, started]

    dry_status, started_by_dry_run, queued_status, started = _with_api(scenario)

    assert (dry_status, started_by_dry_run) == (204, 0)
    assert (queued_status, started) == (202, 1)
