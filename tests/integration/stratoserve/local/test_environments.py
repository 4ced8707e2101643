"""Local execution environments are real processes: isolated, reused while warm, replaced
after a crash or a timeout, and never more than the function's concurrency."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import pytest

from stratoserve.local.environments import FunctionConfig, FunctionPool, InvocationError
from tests.conftest import ROOT

HANDLERS = "tests.integration.stratoserve.local.handlers"


def _pool(handler: str, *, timeout_s: int = 5, max_environments: int = 2) -> FunctionPool:
    config = FunctionConfig(
        name=f"test-{handler}",
        handler=f"{HANDLERS}.{handler}",
        memory_mb=256,
        timeout_s=timeout_s,
        max_environments=max_environments,
    )
    return FunctionPool(config, cwd=ROOT)


def _run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_an_environment_is_reused_while_warm() -> None:
    async def scenario() -> list[Any]:
        pool = _pool("echo")
        try:
            return [await pool.invoke({"n": n}) for n in range(3)]
        finally:
            await pool.close()

    first, second, third = _run(scenario())

    assert first.cold_start and first.init_ms is not None
    assert not second.cold_start and not third.cold_start
    assert first.result["pid"] == second.result["pid"] == third.result["pid"]
    assert first.result["event"] == {"n": 0}
    assert first.result["function"] == "test-echo"
    assert first.result["memory"] == 256
    assert 0 < first.result["remaining_ms"] <= 5000


def test_a_crash_fails_that_request_and_the_next_one_cold_starts() -> None:
    async def scenario() -> tuple[str, int]:
        pool = _pool("crash")
        try:
            with pytest.raises(InvocationError) as crashed:
                await pool.invoke({})
            with pytest.raises(InvocationError):
                await pool.invoke({})
            return str(crashed.value), pool.cold_starts
        finally:
            await pool.close()

    message, cold_starts = _run(scenario())

    assert "exited" in message
    assert cold_starts == 2


def test_an_exception_is_an_error_but_the_environment_lives_on() -> None:
    async def scenario() -> int:
        pool = _pool("raise_error")
        try:
            for _ in range(2):
                with pytest.raises(InvocationError, match="ValueError: bad things"):
                    await pool.invoke({})
            return pool.cold_starts
        finally:
            await pool.close()

    assert _run(scenario()) == 1


def test_a_timeout_kills_the_environment() -> None:
    async def scenario() -> tuple[InvocationError, Any]:
        pool = _pool("sleep", timeout_s=1)
        try:
            with pytest.raises(InvocationError) as timed_out:
                await pool.invoke({"seconds": 30})
            after = await pool.invoke({"seconds": 0})
            return timed_out.value, after
        finally:
            await pool.close()

    started = time.monotonic()
    error, after = _run(scenario())

    assert error.timed_out
    assert after.cold_start
    assert time.monotonic() - started < 20


def test_concurrency_is_capped_at_the_function_limit() -> None:
    async def scenario() -> tuple[set[int], int]:
        pool = _pool("sleep", max_environments=2)
        try:
            await pool.prestart(2)
            results = await asyncio.gather(*(pool.invoke({"seconds": 0.3}) for _ in range(6)))
            return {result.result["pid"] for result in results}, pool.cold_starts
        finally:
            await pool.close()

    pids, cold_starts = _run(scenario())

    assert len(pids) == 2
    assert cold_starts == 2


def test_a_handler_that_cannot_be_imported_fails_init_with_the_reason() -> None:
    async def scenario() -> None:
        pool = _pool("no_such_handler")
        try:
            await pool.invoke({})
        finally:
            await pool.close()

    with pytest.raises(InvocationError, match="init failed: AttributeError"):
        _run(scenario())


def test_a_cancelled_invocation_never_hands_its_answer_to_the_next_caller() -> None:
    async def scenario() -> Any:
        pool = _pool("sleep", max_environments=1)
        try:
            first = asyncio.create_task(pool.invoke({"seconds": 1}))
            await asyncio.sleep(0.3)
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            return await pool.invoke({"seconds": 0})
        finally:
            await pool.close()

    after = _run(scenario())

    assert after.result["slept"] == 0
    assert after.cold_start, "the cancelled environment was discarded, not reused"


def test_an_environment_killed_while_idle_is_replaced_without_an_error() -> None:
    async def scenario() -> tuple[Any, Any]:
        pool = _pool("echo", max_environments=1)
        try:
            first = await pool.invoke({})
            os.kill(first.result["pid"], signal.SIGKILL)
            return first, await pool.invoke({})
        finally:
            await pool.close()

    first, second = _run(scenario())

    assert second.result["pid"] != first.result["pid"]
    assert second.cold_start
