"""Warm-ups that keep N environments warm: the origin fans out to its own alias, each target
holds its environment, and nothing a target does can make the warm-up fail."""

from __future__ import annotations

import io
import json
import threading
from typing import TYPE_CHECKING, Any
from unittest.mock import create_autospec

import pytest

from functions.runtime.environment import ExecutionEnvironment
from functions.runtime.warmup import (
    DEFAULT_HOLD_MS,
    ENVIRONMENT_ID,
    LambdaInvoker,
    WarmupRequest,
    answer_warmup,
    fan_out,
    warmup_event,
    warmup_request,
)
from tests.conftest import DECLARATION_FILE, sample_event

if TYPE_CHECKING:
    from stratoserve.declaration import Declaration

ALIAS = "arn:aws:lambda:us-east-1:123456789012:function:api:live"


class Context:
    invoked_function_arn = ALIAS

    def __init__(self, remaining_ms: int = 10_000) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def _answer(environment_id: str, *, cold_start: bool = False) -> dict[str, Any]:
    """What boto3's invoke returns for a target's warm-up answer."""
    body = {"warmup": True, "environment_id": environment_id, "cold_start": cold_start}
    return {"StatusCode": 200, "Payload": io.BytesIO(json.dumps(body).encode())}


def _lambda(*answers: Any) -> Any:
    """A Lambda client (specced on the call the fan-out makes) answering in this order;
    an exception in `answers` is raised by its call."""
    client = create_autospec(LambdaInvoker, instance=True)
    client.invoke.side_effect = list(answers)
    return client


class ClientFactory:
    """The environment's lazy Lambda client, counting how often it is asked for."""

    def __init__(self, client: Any = None) -> None:
        self.client = client if client is not None else _lambda()
        self.calls = 0

    def __call__(self) -> LambdaInvoker:
        self.calls += 1
        client: LambdaInvoker = self.client
        return client


@pytest.fixture
def environment(declaration: Declaration) -> ExecutionEnvironment:
    return ExecutionEnvironment(declaration, DECLARATION_FILE, "api")


def test_the_schedules_event_asks_for_n_environments() -> None:
    assert warmup_event(3) == {"warmup": {"concurrency": 3}}
    assert warmup_request(warmup_event(3)) == WarmupRequest(concurrency=3)


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"warmup": True}, WarmupRequest()),
        ({"warmup": {"source": "schedule"}}, WarmupRequest()),
        (sample_event("eventbridge-scheduled.json"), WarmupRequest()),
        ({"warmup": {"target": True, "hold_ms": 250}}, WarmupRequest(target=True, hold_ms=250)),
        ({"warmup": {"concurrency": 500, "hold_ms": -1}}, WarmupRequest(50, hold_ms=0)),
        ({"warmup": {"concurrency": "2", "target": "yes"}}, WarmupRequest()),
        ({"warmup": {"concurrency": True}}, WarmupRequest()),
    ],
)
def test_warmup_events_and_what_they_ask_for(event: Any, expected: WarmupRequest) -> None:
    assert warmup_request(event) == expected


@pytest.mark.parametrize("event", [sample_event("apigw-rest-proxy.json"), {"Records": []}, []])
def test_other_events_are_not_warmups(event: Any) -> None:
    assert warmup_request(event) is None


def test_the_origin_reaches_distinct_environments_and_counts_the_cold_ones(
    environment: ExecutionEnvironment,
) -> None:
    client = _lambda(_answer("b", cold_start=True), _answer("c"), _answer("b", cold_start=True))

    answer = answer_warmup(
        environment,
        WarmupRequest(concurrency=4),
        Context(),
        cold_start=True,
        lambda_client=ClientFactory(client),
    )

    assert answer["environment_id"] == ENVIRONMENT_ID
    assert answer["environments"] == [ENVIRONMENT_ID, "b", "c"]
    assert answer["cold"] == 2, "the origin and b, b once"
    assert (answer["concurrency"], answer["failures"], answer["errors"]) == (4, 0, [])
    assert client.invoke.call_count == 3
    for call in client.invoke.call_args_list:
        assert call.kwargs["FunctionName"] == ALIAS, "its own alias, as it was invoked"
        assert call.kwargs["InvocationType"] == "RequestResponse"
        payload = json.loads(call.kwargs["Payload"])
        assert payload == {"warmup": {"target": True, "hold_ms": DEFAULT_HOLD_MS}}


def test_a_failing_target_is_counted_never_raised(environment: ExecutionEnvironment) -> None:
    function_error = {
        "StatusCode": 200,
        "FunctionError": "Unhandled",
        "Payload": io.BytesIO(b'{"errorType": "MemoryError", "errorMessage": "out of memory"}'),
    }
    not_a_warmup = {"StatusCode": 200, "Payload": io.BytesIO(b'{"statusCode": 200}')}
    client = _lambda(
        ConnectionError("endpoint unreachable"), function_error, not_a_warmup, _answer("b")
    )

    answer = answer_warmup(
        environment,
        WarmupRequest(concurrency=5),
        Context(),
        cold_start=False,
        lambda_client=lambda: client,
    )

    assert answer["environments"] == [ENVIRONMENT_ID, "b"]
    assert answer["failures"] == 3
    assert sorted(answer["errors"]) == [
        "ConnectionError: endpoint unreachable",
        'TargetFailed: function error (Unhandled): {"errorType": "MemoryError", '
        '"errorMessage": "out of memory"}',
        'TargetFailed: not a warm-up answer: {"statusCode": 200}',
    ]


def test_no_lambda_client_fails_every_target_not_the_warmup(
    environment: ExecutionEnvironment,
) -> None:
    def no_client() -> LambdaInvoker:
        raise RuntimeError("You must specify a region.")

    answer = answer_warmup(
        environment,
        WarmupRequest(concurrency=3),
        Context(),
        cold_start=False,
        lambda_client=no_client,
    )

    assert answer["environments"] == [ENVIRONMENT_ID]
    assert answer["failures"] == 2


def test_a_target_holds_its_environment_and_never_fans_out(
    environment: ExecutionEnvironment,
) -> None:
    factory = ClientFactory()
    slept: list[float] = []

    answer = answer_warmup(
        environment,
        WarmupRequest(concurrency=5, target=True, hold_ms=100),
        Context(),
        cold_start=True,
        lambda_client=factory,
        sleep=slept.append,
    )

    assert factory.calls == 0
    factory.client.invoke.assert_not_called()
    assert answer["target"] is True
    assert answer["environment_id"] == ENVIRONMENT_ID and answer["cold_start"] is True
    (pause,) = slept
    assert 0.05 < pause <= 0.1, "the rest of 100 ms after the invocation began"
    assert answer["held_ms"] == pytest.approx(pause * 1000, abs=0.01)
    assert "environments" not in answer


def test_a_hold_ends_before_the_invocation_does(environment: ExecutionEnvironment) -> None:
    slept: list[float] = []

    answer_warmup(
        environment,
        WarmupRequest(target=True, hold_ms=5_000),
        Context(remaining_ms=700),
        cold_start=False,
        lambda_client=ClientFactory(),
        sleep=slept.append,
    )

    (pause,) = slept
    assert pause <= 0.2, "700 ms left, half a second kept back to return"


def test_a_plain_warmup_neither_fans_out_nor_holds(environment: ExecutionEnvironment) -> None:
    factory = ClientFactory()
    slept: list[float] = []

    answer = answer_warmup(
        environment,
        WarmupRequest(),
        Context(),
        cold_start=False,
        lambda_client=factory,
        sleep=slept.append,
    )

    assert factory.calls == 0, "boto3 is not imported for one environment"
    assert slept == []
    assert answer["environments"] == [ENVIRONMENT_ID]
    assert (answer["cold"], answer["failures"]) == (0, 0)


def test_the_targets_are_invoked_at_once() -> None:
    count = 4
    # Each call waits until all have started: invoked one after another, they would time out.
    everyone = threading.Barrier(count, timeout=5)

    def invoke(**_: Any) -> dict[str, Any]:
        everyone.wait()
        return _answer(threading.current_thread().name)

    client = _lambda()
    client.invoke.side_effect = invoke

    fan = fan_out(lambda: client, ALIAS, count, timeout_s=5)

    assert fan.errors == []
    assert len({answer["environment_id"] for answer in fan.answers}) == count


def test_a_target_that_does_not_answer_in_time_is_a_failure() -> None:
    release = threading.Event()

    def invoke(**_: Any) -> dict[str, Any]:
        release.wait(5)
        return _answer("late")

    client = _lambda()
    client.invoke.side_effect = invoke
    try:
        fan = fan_out(lambda: client, ALIAS, 2, timeout_s=0.05)
    finally:
        release.set()

    assert fan.answers == []
    assert fan.errors == ["no answer within 0.05 s"] * 2
