"""Warm-up events: keep execution environments (and their loaded models) alive.

A warm-up is either a custom payload `{"warmup": ...}` (what stratoserve's schedules
send) or a bare EventBridge scheduled event. It is answered here, before FastAPI, so it
costs milliseconds and never counts as a user request.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from functions.runtime.environment import ExecutionEnvironment


def is_warmup(event: Any) -> bool:
    if not isinstance(event, dict):
        return False
    return "warmup" in event or (
        event.get("source") == "aws.events" and event.get("detail-type") == "Scheduled Event"
    )


def answer_warmup(environment: ExecutionEnvironment, cold_start: bool) -> dict[str, Any]:
    started = time.perf_counter()
    before = set(environment.cache.loaded())
    # Touch every served model: reloads any the cache evicted since the last request.
    loaded = environment.cache.preload(environment.served_keys())
    return {
        "warmup": True,
        "function": environment.function_name,
        "cold_start": cold_start,
        "models": [str(model.key) for model in loaded],
        "loaded_now": [str(model.key) for model in loaded if model.key not in before],
        "duration_ms": round((time.perf_counter() - started) * 1000, 3),
    }
