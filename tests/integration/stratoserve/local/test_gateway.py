"""The gateway in front of real local environments: API Gateway's refusals byte for byte,
and its answers when a function fails, overruns or returns something malformed."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from stratoserve.declaration.routes import Route, RouteTable
from stratoserve.local.environments import FunctionConfig, FunctionPool
from stratoserve.local.gateway import MAX_BODY_BYTES, Gateway
from stratoserve.local.keys import ApiKey, key_id_for
from stratoserve.local.throttling import PlanLimits, Quota, Throttle, UsageLimiter
from tests.conftest import ROOT

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

KEY = "gateway-test-key-0123456789"
HANDLERS = "tests.integration.stratoserve.local.handlers"
FUNCTIONS = {
    "api": "proxy_echo",
    "echo": "proxy_echo",
    "crash": "crash",
    "bad": "echo",
    "slow": "proxy_slow",
}


class OneKey:
    """A key store holding one key (the gateway only calls `lookup`)."""

    def __init__(self, key: ApiKey) -> None:
        self.key = key

    def lookup(self, value: str) -> ApiKey | None:
        return self.key if value == self.key.value else None


class FrozenClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _gateway(
    plans: dict[str, PlanLimits] | None = None, clock: FrozenClock | None = None
) -> Gateway:
    pools = {
        name: FunctionPool(
            FunctionConfig(name, f"{HANDLERS}.{handler}", 256, timeout_s=10, max_environments=1),
            cwd=ROOT,
        )
        for name, handler in FUNCTIONS.items()
    }
    routes = RouteTable(
        [Route(f"/{name}", frozenset({"POST"}), name) for name in FUNCTIONS if name != "api"]
    )
    keys = OneKey(ApiKey(key_id=key_id_for(KEY), tenant="dev", value=KEY, plan="tight"))
    return Gateway(
        routes=routes,
        keys=keys,
        pools=pools,
        plans=plans,
        limiter=UsageLimiter(clock=clock or FrozenClock()),
        integration_timeout_s=1.5,
    )


def _with_client(scenario: Callable[[httpx.AsyncClient], Awaitable[Any]]) -> Any:
    return _with_gateway(lambda client, _: scenario(client))


def _with_gateway(
    scenario: Callable[[httpx.AsyncClient, Gateway], Awaitable[Any]],
    plans: dict[str, PlanLimits] | None = None,
) -> Any:
    async def run() -> Any:
        gateway = _gateway(plans)
        transport = httpx.ASGITransport(app=gateway)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
                return await scenario(client, gateway)
        finally:
            await asyncio.gather(*(pool.close() for pool in gateway.pools.values()))

    return asyncio.run(run())


def _post(
    client: httpx.AsyncClient, path: str, content: bytes = b"{}"
) -> Awaitable[httpx.Response]:
    return client.post(path, content=content, headers={"x-api-key": KEY})


def test_the_function_sees_the_event_with_the_callers_key_id() -> None:
    response = _with_client(lambda client: _post(client, "/echo", b'{"inputs": [1]}'))

    assert response.status_code == 200
    seen = response.json()
    assert seen["resource"] == "/echo"
    assert seen["body"] == '{"inputs": [1]}'
    assert seen["api_key_id"] == key_id_for(KEY)
    assert seen["request_id"] == response.headers["x-amzn-requestid"]


def test_an_unmatched_path_goes_to_the_api_function_through_the_proxy() -> None:
    response = _with_client(lambda client: _post(client, "/no/such/thing"))

    assert response.status_code == 200
    assert response.json()["resource"] == "/{proxy+}"


@pytest.mark.parametrize(
    ("path", "status", "body", "error_type"),
    [
        ("/crash", 502, b'{"message":"Internal server error"}', "InternalServerErrorException"),
        ("/bad", 502, b'{"message":"Internal server error"}', "InternalServerErrorException"),
        ("/slow", 504, b'{"message":"Endpoint request timed out"}', "IntegrationTimeoutException"),
    ],
)
def test_failures_get_api_gateways_answers(
    path: str, status: int, body: bytes, error_type: str
) -> None:
    response = _with_client(lambda client: _post(client, path))

    assert response.status_code == status
    assert response.content == body
    assert response.headers["x-amzn-errortype"] == error_type


def test_a_body_over_lambdas_payload_limit_is_413_and_never_invoked() -> None:
    big = json.dumps({"inputs": ["x" * (MAX_BODY_BYTES + 1)]}).encode()

    response = _with_client(lambda client: _post(client, "/crash", big))

    assert response.status_code == 413
    assert response.content == b'{"message":"Request Too Long"}'


def test_a_refused_key_never_reaches_the_function() -> None:
    async def scenario(client: httpx.AsyncClient, gateway: Gateway) -> tuple[httpx.Response, int]:
        refused = await client.post(
            "/echo", content=b"{}", headers={"x-api-key": "wrong-key-but-long-enough"}
        )
        return refused, gateway.pools["echo"].cold_starts

    response, environments_started = _with_gateway(scenario)

    assert response.status_code == 403
    assert response.content == b'{"message":"Forbidden"}'
    assert environments_started == 0


def test_a_plan_throttles_then_limits_with_api_gateways_bodies() -> None:
    # The clock is frozen: no token comes back while the test runs.
    throttled_plan = {"tight": PlanLimits(throttle=Throttle(rate=1, burst=2))}
    quota_plan = {"tight": PlanLimits(throttle=Throttle(rate=1, burst=5), quota=Quota(3, "DAY"))}

    async def three_then_more(client: httpx.AsyncClient, _: Gateway) -> list[httpx.Response]:
        return [await _post(client, "/echo") for _ in range(4)]

    throttled = _with_gateway(three_then_more, throttled_plan)
    limited = _with_gateway(three_then_more, quota_plan)

    assert [answer.status_code for answer in throttled] == [200, 200, 429, 429]
    assert throttled[2].content == b'{"message":"Too Many Requests"}'
    assert throttled[2].headers["x-amzn-errortype"] == "TooManyRequestsException"
    assert [answer.status_code for answer in limited] == [200, 200, 200, 429]
    assert limited[3].content == b'{"message":"Limit Exceeded"}'


def test_a_key_on_no_declared_plan_is_forbidden() -> None:
    other_plans = {"other": PlanLimits(throttle=Throttle(rate=1, burst=5))}

    async def one(client: httpx.AsyncClient, gateway: Gateway) -> tuple[httpx.Response, int]:
        return await _post(client, "/echo"), gateway.pools["echo"].cold_starts

    answer, environments_started = _with_gateway(one, other_plans)

    assert answer.status_code == 403
    assert answer.content == b'{"message":"Forbidden"}'
    assert environments_started == 0
