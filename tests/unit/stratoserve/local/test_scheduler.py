"""The local EventBridge: each declared warm-up at start and on its schedule, with the
event the CDK app's rule sends; a schedule it cannot evaluate, or a failed warm-up, is a
log line, never a crash."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

from functions.runtime.warmup import warmup_event
from stratoserve.declaration import load_declaration
from stratoserve.local.scheduler import Warmup, WarmupScheduler, declared_warmups
from stratoserve.local.schedules import parse_schedule
from tests.unit.stratoserve.declaration.minimal import MINIMAL

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

    from stratoserve.declaration import Declaration

START = dt.datetime(2026, 3, 4, 10, 17, 30, tzinfo=dt.UTC)


class FakeTime:
    """A clock that the scheduler's sleeps move forward, at once."""

    def __init__(self) -> None:
        self.now = START

    def clock(self) -> dt.datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)  # what was due runs first, at the time it was due
        self.now += dt.timedelta(seconds=seconds)


class Functions:
    """The functions the scheduler invokes: what each was sent, and when."""

    def __init__(self, time: FakeTime, *, fail: bool = False) -> None:
        self.time = time
        self.fail = fail
        self.sent: list[tuple[str, dict[str, Any], dt.datetime]] = []

    async def invoke(self, function: str, event: dict[str, Any]) -> dict[str, Any]:
        self.sent.append((function, event, self.time.now))
        if self.fail:
            raise RuntimeError("api: init failed")
        return {"warmup": True, "environments": ["a", "b"], "cold": 1, "failures": 0}


def _warmup(expression: str, concurrency: int = 2) -> Warmup:
    return Warmup("api", expression, concurrency, parse_schedule(expression))


def _run(warmups: list[Warmup], functions: Functions, time: FakeTime, sends: int) -> None:
    async def scenario() -> None:
        scheduler = WarmupScheduler(warmups, functions.invoke, clock=time.clock, sleep=time.sleep)
        scheduler.start()
        for _ in range(10_000):
            if len(functions.sent) >= sends:
                break
            await asyncio.sleep(0)
        await scheduler.stop()

    asyncio.run(scenario())


def test_a_warmup_is_sent_at_start_then_at_every_rate_period() -> None:
    time = FakeTime()
    functions = Functions(time)

    _run([_warmup("rate(5 minutes)")], functions, time, sends=3)

    assert [sent[2] for sent in functions.sent[:3]] == [
        START,
        START + dt.timedelta(minutes=5),
        START + dt.timedelta(minutes=10),
    ]
    assert all(sent[:2] == ("api", warmup_event(2)) for sent in functions.sent)


def test_a_cron_warmup_fires_on_its_utc_minutes() -> None:
    time = FakeTime()
    functions = Functions(time)

    _run([_warmup("cron(0/20 * * * ? *)")], functions, time, sends=3)

    assert [sent[2].strftime("%H:%M:%S") for sent in functions.sent[:3]] == [
        "10:17:30",
        "10:20:00",
        "10:40:00",
    ]


def test_a_schedule_it_cannot_evaluate_warms_at_start_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    time = FakeTime()
    functions = Functions(time)
    unsupported = Warmup("api", "cron(0 12 L * ? *)", 2, None, "L is not evaluated")

    with caplog.at_level(logging.INFO, logger="stratoserve.scheduler"):
        _run([unsupported], functions, time, sends=1)

    assert len(functions.sent) == 1
    assert (
        "warm-up of api: L is not evaluated; it is warmed once at start only, never again"
        in caplog.messages
    )


def test_a_failed_warmup_is_logged_and_the_schedule_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    time = FakeTime()
    functions = Functions(time, fail=True)

    with caplog.at_level(logging.INFO, logger="stratoserve.scheduler"):
        _run([_warmup("rate(1 minute)")], functions, time, sends=2)

    assert len(functions.sent) >= 2
    assert "warm-up of api failed: api: init failed" in caplog.messages


def test_each_answer_is_logged_with_the_environments_reached(
    caplog: pytest.LogCaptureFixture,
) -> None:
    time = FakeTime()

    with caplog.at_level(logging.INFO, logger="stratoserve.scheduler"):
        _run([_warmup("rate(1 hour)")], Functions(time), time, sends=1)

    assert "warm-up of api: 2 of 2 environment(s) warm (1 cold)" in caplog.messages


def test_declared_warmups_are_bounded_by_the_local_environments(tmp_path: Path) -> None:
    path = tmp_path / "stratoserve.toml"
    path.write_text(
        MINIMAL
        + """
[functions.api]
local_environments = 2
[functions.api.warmup]
schedule = "cron(0/10 8-18 ? * MON-FRI *)"
concurrency = 3
[functions.digits]
models = ["digits"]
[functions.digits.warmup]
schedule = "cron(0 12 L * ? *)"
"""
    )
    declaration = load_declaration(path)

    api, digits = declared_warmups(declaration)

    assert (api.function, api.concurrency, api.declared_concurrency) == ("api", 2, 3)
    assert api.schedule == parse_schedule("cron(0/10 8-18 ? * MON-FRI *)")
    assert (digits.function, digits.concurrency, digits.schedule) == ("digits", 1, None)
    assert digits.problem is not None and "L, W and #" in digits.problem


def test_the_shipped_declaration_warms_two_api_environments(declaration: Declaration) -> None:
    (api,) = declared_warmups(declaration)

    assert (api.function, api.expression, api.concurrency) == ("api", "rate(5 minutes)", 2)


def test_a_followed_schedule_sends_on_its_firings_only_not_at_start() -> None:
    """The stuck-jobs sweep's way in: `follow(schedule, send)`."""
    time = FakeTime()
    fired: list[dt.datetime] = []

    async def sweep() -> None:
        fired.append(time.now)

    async def scenario() -> None:
        scheduler = WarmupScheduler([], Functions(time).invoke, clock=time.clock, sleep=time.sleep)
        scheduler.follow(parse_schedule("rate(15 minutes)"), sweep)
        for _ in range(10_000):
            if len(fired) >= 2:
                break
            await asyncio.sleep(0)
        await scheduler.stop()

    asyncio.run(scenario())

    # A rate counts from when the rule (here: the stack) started, as EventBridge's does.
    assert fired[:2] == [START + dt.timedelta(minutes=15), START + dt.timedelta(minutes=30)]
