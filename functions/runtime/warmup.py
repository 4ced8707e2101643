"""Warm-up events: keep execution environments (and their loaded models) alive.

A warm-up is either a custom payload `{"warmup": ...}` (what stratoserve's schedules send:
`warmup_event(N)`) or a bare EventBridge scheduled event. It is answered here, before
FastAPI, so it costs milliseconds and never counts as a user request.

One invocation only ever warms the environment it lands in, so keeping N environments warm
takes N invocations at once. The scheduled one (the origin) invokes its own alias N-1
times concurrently, each with a target payload; a target holds its environment busy for a
moment, so that one environment that finished early cannot serve two targets. Every
environment names itself with an id made at init, and the origin's answer lists the ids
it reached. A warm-up never fails: a target that could not be invoked is counted, logged
and left to the next schedule.

Nothing heavy is imported here at module level: the CDK app imports `warmup_event`.
"""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from functions.runtime.aws import describe_error
from functions.runtime.snapstart import after_restore

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from functions.runtime.environment import ExecutionEnvironment

ENVIRONMENT_ID = uuid.uuid4().hex
"""This execution environment's id, made once at init (when a handler module imports this),
and again after each SnapStart restore (restored environments share their snapshot's)."""


def _renew_environment_id() -> None:
    global ENVIRONMENT_ID
    ENVIRONMENT_ID = uuid.uuid4().hex


after_restore(_renew_environment_id)

DEFAULT_HOLD_MS = 100
"""How long a target keeps its environment busy (lambda-warmer's delay): long enough for
the other concurrent targets to have been placed elsewhere."""
MAX_HOLD_MS = 5_000
MAX_CONCURRENCY = 50
"""The declaration's bound on `warmup.concurrency`; a crafted event cannot ask for more."""
DEADLINE_MARGIN_S = 0.5
"""Time kept back from the invocation's deadline to answer (fan-out) or to return (hold)."""


def warmup_event(concurrency: int) -> dict[str, Any]:
    """The constant input of a function's warm-up schedule: the CDK app's EventBridge rule
    and the local scheduler both send this."""
    return {"warmup": {"concurrency": concurrency}}


def target_event(hold_ms: int = DEFAULT_HOLD_MS) -> dict[str, Any]:
    """What the origin sends each of its fan-out invocations."""
    return {"warmup": {"target": True, "hold_ms": hold_ms}}


@dataclass(frozen=True)
class WarmupRequest:
    concurrency: int = 1
    target: bool = False
    """A fan-out invocation: holds its environment, never fans out again."""
    hold_ms: int = DEFAULT_HOLD_MS


class InvocationContext(Protocol):
    """What a warm-up reads of Lambda's context object."""

    @property
    def invoked_function_arn(self) -> str: ...

    def get_remaining_time_in_millis(self) -> int: ...


class LambdaInvoker(Protocol):
    """The one call of boto3's Lambda client that the fan-out makes."""

    def invoke(
        self, *, FunctionName: str, InvocationType: str, Payload: bytes
    ) -> Mapping[str, Any]: ...


@dataclass
class FanOut:
    """What the fan-out invocations answered: their warm-up answers, and why the others
    failed."""

    answers: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class TargetFailed(Exception):
    """A fan-out invocation ran but did not answer as a warm-up."""


def warmup_request(event: Any) -> WarmupRequest | None:
    """What a warm-up event asks for; None when the event is not a warm-up. `{"warmup":
    true}` and EventBridge's own scheduled event warm one environment."""
    if not isinstance(event, dict):
        return None
    if "warmup" not in event:
        scheduled = (
            event.get("source") == "aws.events" and event.get("detail-type") == "Scheduled Event"
        )
        return WarmupRequest() if scheduled else None
    asked = event["warmup"]
    if not isinstance(asked, dict):
        return WarmupRequest()
    return WarmupRequest(
        concurrency=_bounded(asked.get("concurrency"), 1, 1, MAX_CONCURRENCY),
        target=asked.get("target") is True,
        hold_ms=_bounded(asked.get("hold_ms"), DEFAULT_HOLD_MS, 0, MAX_HOLD_MS),
    )


def warm_if_asked(
    environment: ExecutionEnvironment, event: Any, context: Any, *, cold_start: bool
) -> dict[str, Any] | None:
    """A handler's first step: the warm-up's answer when `event` is one, else None."""
    request = warmup_request(event)
    if request is None:
        return None
    return answer_warmup(
        environment,
        request,
        context,
        cold_start=cold_start,
        lambda_client=environment.lambda_client,
    )


def answer_warmup(
    environment: ExecutionEnvironment,
    request: WarmupRequest,
    context: InvocationContext,
    *,
    cold_start: bool,
    lambda_client: Callable[[], LambdaInvoker],
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Touch every served model, then hold (a target) or fan out (an origin asking for more
    than one environment). `lambda_client` is called only to fan out, so boto3 is imported
    by an origin's first fan-out and never by a target or a plain warm-up."""
    started = time.perf_counter()
    before = set(environment.cache.loaded())
    # Touch every served model: reloads any the cache evicted since the last request.
    loaded = environment.cache.preload(environment.served_keys())
    answer: dict[str, Any] = {
        "warmup": True,
        "function": environment.function_name,
        "environment_id": ENVIRONMENT_ID,
        "cold_start": cold_start,
        "models": [str(model.key) for model in loaded],
        "loaded_now": [str(model.key) for model in loaded if model.key not in before],
    }
    remaining_s = context.get_remaining_time_in_millis() / 1000 - DEADLINE_MARGIN_S
    if request.target:
        held = hold(request.hold_ms / 1000, started, remaining_s, sleep=sleep)
        answer.update(target=True, held_ms=round(held * 1000, 3))
    else:
        fan = FanOut()
        if request.concurrency > 1:
            fan = fan_out(
                lambda_client,
                context.invoked_function_arn,
                request.concurrency - 1,
                hold_ms=request.hold_ms,
                timeout_s=max(remaining_s - (time.perf_counter() - started), 0.0),
            )
        answer.update(summarize(answer, request.concurrency, fan))
        if fan.errors:
            from functions.runtime.observability import logger

            logger.warning(
                "warm-up fan-out: some invocations failed",
                extra={"failures": len(fan.errors), "errors": fan.errors},
            )
    answer["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
    return answer


def hold(
    hold_s: float, started: float, remaining_s: float, *, sleep: Callable[[float], None]
) -> float:
    """Keep this environment busy until `hold_s` after the invocation `started` (a
    perf_counter time), never past `remaining_s` after it; the seconds slept."""
    pause = min(hold_s, remaining_s) - (time.perf_counter() - started)
    if pause <= 0:
        return 0.0
    sleep(pause)
    return pause


def fan_out(
    lambda_client: Callable[[], LambdaInvoker],
    function_arn: str,
    count: int,
    *,
    hold_ms: int = DEFAULT_HOLD_MS,
    timeout_s: float,
) -> FanOut:
    """Invoke `function_arn` `count` times at once (RequestResponse, a target event each):
    every call that does not answer as a warm-up within `timeout_s` is an error, never an
    exception. Calls still running at the timeout are left to finish on their own."""
    try:
        client = lambda_client()
    except Exception as error:
        return FanOut(errors=[f"no Lambda client: {describe_error(error)}"] * count)
    payload = json.dumps(target_event(hold_ms)).encode()
    # One thread per call: a thread waiting on the next call would let an early answer's
    # environment take it, warming one environment twice.
    executor = ThreadPoolExecutor(max_workers=count, thread_name_prefix="warmup")
    try:
        calls = [
            executor.submit(invoke_target, client, function_arn, payload) for _ in range(count)
        ]
        _, late = wait(calls, timeout=timeout_s)
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
    result = FanOut()
    for call in calls:
        if call in late:
            result.errors.append(f"no answer within {timeout_s:.3g} s")
        elif (failure := call.exception()) is not None:
            result.errors.append(describe_error(failure))
        else:
            result.answers.append(call.result())
    return result


def invoke_target(client: LambdaInvoker, function_arn: str, payload: bytes) -> dict[str, Any]:
    response = client.invoke(
        FunctionName=function_arn, InvocationType="RequestResponse", Payload=payload
    )
    body = response["Payload"].read()
    if response.get("FunctionError"):
        raise TargetFailed(f"function error ({response['FunctionError']}): {_first_line(body)}")
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or not isinstance(answer.get("environment_id"), str):
        raise TargetFailed(f"not a warm-up answer: {_first_line(body)}")
    return answer


def summarize(origin: Mapping[str, Any], concurrency: int, fan: FanOut) -> dict[str, Any]:
    """The origin's account of the warm-up: the distinct environments reached (its own
    first), how many of them were cold, how many invocations failed and why."""
    reached = [origin["environment_id"]]
    cold = int(origin["cold_start"])
    for answer in fan.answers:
        if answer["environment_id"] not in reached:
            reached.append(answer["environment_id"])
            cold += bool(answer.get("cold_start"))
    return {
        "concurrency": concurrency,
        "environments": reached,
        "cold": cold,
        "failures": len(fan.errors),
        "errors": fan.errors,
    }


def _bounded(value: Any, default: int, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        return default
    return min(max(value, low), high)


def _first_line(body: bytes) -> str:
    text = body.decode("utf-8", "replace").strip()
    return text.splitlines()[0][:200] if text else "(empty)"
