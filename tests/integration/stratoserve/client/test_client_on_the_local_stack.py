"""The client against `stratoserve dev`: real HTTP through the local gateway (keys, plans,
events), the real handlers and models, the real job path."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from stratoserve.client import (
    AsyncClient,
    Client,
    ForbiddenError,
    NotFoundError,
    ThrottledError,
    UnprocessableError,
)
from tests.integration.stratoserve.local.dev_stack import KEY, create_key, start_stack, stop_stack

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.integration.stratoserve.local.dev_stack import Stack

PIXELS = [0.0, 0.0, 5.0, 13.0, 9.0, 1.0, 0.0, 0.0] * 8


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, built_models: Path) -> Iterator[Stack]:
    running = start_stack(tmp_path_factory.mktemp("client-stack"))
    try:
        yield running
    finally:
        stop_stack(running)


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[Client]:
    with Client(stack.url, KEY) as client:
        yield client


def test_predict_inline_and_through_a_job(client: Client) -> None:
    inline = client.predict("digits", [PIXELS])
    assert len(inline.outputs) == 1 and 0 <= inline.outputs[0]["label"] <= 9
    assert inline.request_id
    # Over routing.embed.inline_max_inputs (64): answered 202, waited for, same shape.
    texts = [f"sentence number {index}" for index in range(70)]
    through_job = client.predict("embed", texts)
    assert len(through_job.outputs) == 70 and len(through_job.outputs[0]) == 384
    assert (through_job.model.name, through_job.model.version) == ("embed", "2")


def test_submit_and_wait(client: Client) -> None:
    job = client.submit("digits", [PIXELS] * 3, version="v1")
    prediction = job.wait(progress=False)
    assert len(prediction.outputs) == 3
    assert job.state.backend == "lambda"
    assert client.job(job.job_id, version="v1").status == "succeeded"


def test_errors_carry_the_apis_message(client: Client, stack: Stack) -> None:
    with Client(stack.url, "not-a-key") as stranger, pytest.raises(ForbiddenError) as denied:
        stranger.predict("digits", [PIXELS])
    assert denied.value.message == "Forbidden"
    with pytest.raises(NotFoundError, match="unknown model"):
        client.predict("nope", [PIXELS])
    with pytest.raises(UnprocessableError):
        client.predict("digits", [[1.0, 2.0]])


def test_a_plans_rate_is_a_throttled_error(stack: Stack) -> None:
    issued = create_key(stack, "client-free", "free")  # rate 5, burst 10
    throttled = 0
    with Client(stack.url, issued["key"], max_retries=0) as free:
        for _ in range(20):
            try:
                free.predict("digits", [PIXELS])
            except ThrottledError as error:
                assert error.message == "Too Many Requests"
                throttled += 1
    assert throttled > 0


def test_retries_ride_out_a_plans_rate(stack: Stack) -> None:
    issued = create_key(stack, "client-free-retrying", "free")  # rate 5, burst 10
    with Client(stack.url, issued["key"], max_retries=6) as free:
        answered = [free.predict("digits", [PIXELS]) for _ in range(20)]
    assert all(len(prediction.outputs) == 1 for prediction in answered)


def test_the_async_client(stack: Stack) -> None:
    async def run() -> int:
        async with AsyncClient(stack.url, KEY) as client:
            predictions = await asyncio.gather(
                *(client.predict("digits", [PIXELS]) for _ in range(4))
            )
            job = await client.submit("digits", [PIXELS] * 2)
            waited = await job.wait()
        return sum(len(prediction.outputs) for prediction in predictions) + len(waited.outputs)

    assert asyncio.run(run()) == 6
