"""The stuck-jobs sweep: a scheduled event (EventBridge on AWS, the local stack's scheduler
in `stratoserve dev`) asks the worker to settle every job that can never run any more, so
none stays `queued` or `running` until its TTL because nobody read it
(functions/runtime/job_store.py JobStore.sweep; each one settled counts in StuckJobs)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from functions.runtime.job_store import JobStore

SWEEP_EVENT: dict[str, Any] = {"stratoserve": {"sweep": "jobs"}}
"""What the schedule sends the worker (the rule's input, replacing EventBridge's event)."""


def is_sweep(event: Any) -> bool:
    return isinstance(event, dict) and event.get("stratoserve") == SWEEP_EVENT["stratoserve"]


def sweep_if_asked(store: Callable[[], JobStore], event: Any) -> dict[str, Any] | None:
    """A handler's step: the sweep's answer when `event` asks for one, else None."""
    if not is_sweep(event):
        return None
    started = time.perf_counter()
    settled = store().sweep()
    return {
        "sweep": "jobs",
        "settled": settled,
        "ms": round(1000 * (time.perf_counter() - started), 1),
    }
