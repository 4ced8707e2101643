"""The local stack's EventBridge: each function's warm-up event on its declared schedule
(`functions.<name>.warmup`), and once at start; other scheduled events (the worker's
stuck-jobs sweep, `jobs.sweep_schedule`) on theirs through `follow`.

The event is the one the CDK app's rule sends (`warmup_event(concurrency)`), handed to the
function's pool as EventBridge hands it to Lambda: straight to the function, never through
the gateway, so a warm-up is no user request in the gateway's metrics or a tenant's usage.
The function then fans out through the local Invoke API (lambda_api.py) on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from functions.runtime.warmup import warmup_event
from stratoserve.local.schedules import UnsupportedSchedule, parse_schedule
from stratoserve.local.tasks import cancel_all

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine

    from stratoserve.declaration import Declaration
    from stratoserve.local.schedules import Schedule

logger = logging.getLogger("stratoserve.scheduler")

# Sleep in slices, so a clock that jumps (a laptop waking up) delays a firing by a minute
# at most rather than by the whole time it slept.
_SLICE_S = 60.0


@dataclass(frozen=True)
class Warmup:
    function: str
    expression: str
    concurrency: int
    """What the event asks for: the declared concurrency, at most the function's
    `local_environments` (more could only be throttled here, every time)."""
    schedule: Schedule | None
    """None: the expression cannot be evaluated here (the function is warmed at start only)."""
    problem: str | None = None
    declared_concurrency: int | None = None


def declared_warmups(declaration: Declaration) -> list[Warmup]:
    """Every function's declared warm-up, its schedule parsed (or the reason it cannot be)."""
    warmups = []
    for name, function in sorted(declaration.functions.items()):
        if function.warmup is None:
            continue
        expression = function.warmup.schedule
        try:
            schedule: Schedule | None = parse_schedule(expression)
            problem = None
        except UnsupportedSchedule as error:
            schedule, problem = None, str(error)
        declared = function.warmup.concurrency
        warmups.append(
            Warmup(
                name,
                expression,
                min(declared, function.local_environments),
                schedule,
                problem,
                declared,
            )
        )
    return warmups


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class WarmupScheduler:
    """Sends each warm-up at start and then whenever its schedule fires. `invoke(function,
    event)` runs one invocation and returns the handler's result."""

    def __init__(
        self,
        warmups: list[Warmup],
        invoke: Callable[[str, dict[str, Any]], Awaitable[Any]],
        *,
        clock: Callable[[], dt.datetime] = _utc_now,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.warmups = warmups
        self._invoke = invoke
        self._clock = clock
        self._sleep = sleep
        self._tasks: set[asyncio.Task[Any]] = set()

    def start(self) -> None:
        for warmup in self.warmups:
            if warmup.schedule is None:
                logger.warning(
                    "warm-up of %s: %s; it is warmed once at start only, never again",
                    warmup.function,
                    warmup.problem,
                )
            self._spawn(self._follow(warmup))

    async def stop(self) -> None:
        await cancel_all(self._tasks)
        self._tasks.clear()

    def follow(self, schedule: Schedule, send: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        """Run `send()` whenever `schedule` fires from now on (not at start)."""
        self._spawn(self._fire(schedule, send))

    async def _follow(self, warmup: Warmup) -> None:
        self._spawn(self.send(warmup))
        if warmup.schedule is None:
            return
        await self._fire(warmup.schedule, lambda: self.send(warmup))
        logger.warning("warm-up of %s: %s never fires again", warmup.function, warmup.expression)

    async def _fire(self, schedule: Schedule, send: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        since = moment = self._clock()
        while (fire := schedule.next_after(moment, since=since)) is not None:
            while (left := (fire - self._clock()).total_seconds()) > 0:
                await self._sleep(min(left, _SLICE_S))
            # Its own task: a slow invocation must not hold back the next firing.
            self._spawn(send())
            moment = fire

    async def send(self, warmup: Warmup) -> Any:
        """One warm-up of `warmup.function`; its answer is logged, a failure too (never
        raised: the schedule goes on)."""
        try:
            answer = await self._invoke(warmup.function, warmup_event(warmup.concurrency))
        except Exception as error:
            logger.warning("warm-up of %s failed: %s", warmup.function, error)
            return None
        if not isinstance(answer, dict) or "environments" not in answer:
            logger.warning("warm-up of %s: not a warm-up answer: %.200r", warmup.function, answer)
            return answer
        failures = answer.get("failures", 0)
        log = logger.warning if failures else logger.info
        log(
            "warm-up of %s: %d of %d environment(s) warm (%d cold)%s",
            warmup.function,
            len(answer["environments"]),
            warmup.concurrency,
            answer.get("cold", 0),
            f", {failures} failed: {'; '.join(answer.get('errors', []))}" if failures else "",
        )
        return answer

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_report_crash)


def _report_crash(task: asyncio.Task[Any]) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        if (error := task.exception()) is not None:
            logger.error("the warm-up scheduler stopped: %r", error)
