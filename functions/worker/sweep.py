"""The stuck-jobs sweep: a scheduled event (EventBridge on AWS, the local stack's scheduler
in `stratoserve dev`) asks the worker to settle every job that can never run any more, so
none stays `queued` or `running` until its TTL because nobody read it
(functions/runtime/job_store.py JobStore.sweep; each one settled counts in StuckJobs), and
to queue the callbacks no worker queued: of jobs settled by a read or an earlier sweep, or
finished by an invocation that died before queueing the callback on its last delivery."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from functions.runtime.callback_queue import CallbackMessage

if TYPE_CHECKING:
    from collections.abc import Callable

    from functions.runtime.callback_queue import CallbackQueue
    from functions.runtime.job_store import JobStore

SWEEP_EVENT: dict[str, Any] = {"stratoserve": {"sweep": "jobs"}}
"""What the schedule sends the worker (the rule's input, replacing EventBridge's event)."""


def is_sweep(event: Any) -> bool:
    return isinstance(event, dict) and event.get("stratoserve") == SWEEP_EVENT["stratoserve"]


def sweep_if_asked(
    store: Callable[[], JobStore],
    event: Any,
    *,
    callbacks: Callable[[], CallbackQueue] | None = None,
    callback_grace_s: float = 0.0,
) -> dict[str, Any] | None:
    """A handler's step: the sweep's answer when `event` asks for one, else None.
    `callback_grace_s`: how long after a job finished its callback is left to the
    invocation that finished it (the queue's visibility timeout: by then it has ended)."""
    if not is_sweep(event):
        return None
    started = time.perf_counter()
    jobs = store()
    settled = jobs.sweep()
    queued = 0
    if callbacks is not None:
        before = time.time() - callback_grace_s
        for job in jobs.pending_callbacks(finished_before=before):
            callbacks().send(CallbackMessage(job.tenant, job.job_id, job.correlation_id))
            # Marked after the send: a sweep that dies between the two queues it again
            # (a receiver accepts duplicates), never loses it.
            jobs.callback_enqueued(job.tenant, job.job_id)
            queued += 1
    return {
        "sweep": "jobs",
        "settled": settled,
        "callbacks_queued": queued,
        "ms": round(1000 * (time.perf_counter() - started), 1),
    }
