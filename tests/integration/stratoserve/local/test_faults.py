"""The local stack's fault API, on the Lambda Invoke API's port: a restart of the local AWS
asked from outside answers once it is down, and it comes back by itself."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from botocore.exceptions import EndpointConnectionError

from stratoserve.local.faults import FaultsApi
from stratoserve.local.lambda_api import LambdaApi
from tests.integration.stratoserve.moto import local_aws, one_try_client

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    from stratoserve.local.aws import LocalAws

RESTART = "/_stratoserve/faults/aws-restart"
TOKEN = "the-stack-token-of-this-test"
DOWN_S = 4.0


@pytest.fixture
def aws() -> Iterator[LocalAws]:
    with local_aws() as running:
        yield running


def _with_api(aws: LocalAws, scenario: Callable[[httpx.AsyncClient], Awaitable[Any]]) -> Any:
    """The scenario against the Lambda Invoke API (no functions) carrying the fault API."""

    async def run() -> Any:
        api = LambdaApi({}, FaultsApi(aws), token=TOKEN)
        transport = httpx.ASGITransport(app=api)
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        try:
            async with httpx.AsyncClient(
                transport=transport, base_url="http://127.0.0.1:9001", headers=bearer
            ) as client:
                return await scenario(client)
        finally:
            await api.close()

    return asyncio.run(run())


def _list_queues(sqs: Any) -> str:
    """'ok', or the error of one try."""
    try:
        sqs.list_queues()
    except EndpointConnectionError as error:
        return type(error).__name__
    return "ok"


def test_an_aws_restart_answers_once_it_is_down_and_it_comes_back(aws: LocalAws) -> None:
    sqs = one_try_client("sqs", aws.endpoint_url)  # ahead: making one takes a while

    async def scenario(client: httpx.AsyncClient) -> dict[str, Any]:
        # Down long enough for three calls on a busy machine; one restart at a time.
        answer = await client.post(RESTART, json={"down_s": DOWN_S})
        during = await asyncio.to_thread(_list_queues, sqs)
        state_during = (await client.get("/_stratoserve/faults")).json()
        again = await client.post(RESTART, json={"down_s": DOWN_S})
        deadline = time.monotonic() + DOWN_S + 15
        while not aws.up and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        return {
            "answer": answer,
            "during": during,
            "state_during": state_during,
            "again": again,
            "after": await asyncio.to_thread(_list_queues, sqs),
            "state_after": (await client.get("/_stratoserve/faults")).json(),
        }

    url = aws.endpoint_url
    seen = _with_api(aws, scenario)

    assert seen["answer"].status_code == 202
    assert seen["answer"].json() == {"aws": "down", "down_s": DOWN_S, "endpoint_url": url}
    assert seen["during"] == "EndpointConnectionError"
    assert seen["state_during"] == {"aws": {"up": False, "restarts": 0, "endpoint_url": url}}
    assert seen["again"].status_code == 409
    assert seen["after"] == "ok"
    assert seen["state_after"] == {"aws": {"up": True, "restarts": 1, "endpoint_url": url}}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{", "the body is not JSON"),
        (b'{"down_s": "3"}', '"down_s" must be a number of seconds'),
        (b'{"down_s": -1}', '"down_s" must be between 0 and 300 seconds'),
        (b'{"down": 3}', 'the body must be a JSON object like {"down_s": 3}'),
    ],
)
def test_a_bad_restart_request_is_400_and_restarts_nothing(
    aws: LocalAws, body: bytes, message: str
) -> None:
    answer = _with_api(
        aws,
        lambda client: client.post(
            RESTART, content=body, headers={"content-type": "application/json"}
        ),
    )

    assert answer.status_code == 400
    assert answer.json()["message"].startswith(message)
    assert aws.up and aws.restarts == 0


def test_other_control_paths_are_404_and_invocations_still_lambdas(aws: LocalAws) -> None:
    async def scenario(client: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response]:
        unknown = await client.post("/_stratoserve/faults/disk-full", json={})
        invoke = await client.post("/2015-03-31/functions/nope/invocations", content=b"{}")
        return unknown, invoke

    unknown, invoke = _with_api(aws, scenario)

    assert unknown.status_code == 404
    assert "POST /_stratoserve/faults/aws-restart" in unknown.json()["message"]
    assert invoke.status_code == 404
    assert invoke.headers["x-amzn-errortype"] == "ResourceNotFoundException"
