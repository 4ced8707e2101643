"""Handlers for exercising local execution environments: each misbehaves in one way."""

from __future__ import annotations

import os
import time
from typing import Any

INIT_PID = os.getpid()


def echo(event: Any, context: Any) -> dict[str, Any]:
    return {
        "event": event,
        "pid": INIT_PID,
        "function": context.function_name,
        "memory": context.memory_limit_in_mb,
        "remaining_ms": context.get_remaining_time_in_millis(),
    }


def crash(event: Any, context: Any) -> None:
    os._exit(3)


def raise_error(event: Any, context: Any) -> None:
    raise ValueError("bad things")


def sleep(event: Any, context: Any) -> dict[str, Any]:
    time.sleep(float(event["seconds"]))
    return {"slept": event["seconds"], "pid": INIT_PID}
