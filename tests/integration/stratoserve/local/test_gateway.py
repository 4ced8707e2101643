"""The gateway in front of real local environments: API Gateway's refusals byte for byte,
and its answers when a function fails, overruns or returns something malformed."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from stratoserve.local.environments import FunctionConfig, FunctionPool
from stratoserve.local.gateway import MAX_BODY_BYTES, Gateway
from stratoserve.local.keys import ApiKey, StaticKeys, key_id_for
from stratoserve.local.routes import Route, RouteTable
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


def _gateway() -> Gateway:
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
    keys = StaticKeys([ApiKey(key_id=key_id_for(KEY), tenant="dev", value=KEY)])
    return Gateway(routes=routes, keys=keys, pools=pools, integration_timeout_s=1.5)


def _with_client(scenario: Callable[[httpx.AsyncClient], Awaitable[Any]]) -> Any:
    return _with_gateway(lambda client, _: scenario(client))


def _with_gateway(scenario: Callable[[httpx.AsyncClient, Gateway], Awaitable[Any]]) -> Any:
    async def run() -> Any:
        gateway = _gateway()
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
