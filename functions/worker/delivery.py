"""One record of a job batch as it goes through the worker: the contract between the batch
(functions/worker/batch.py) and GPU dispatch (functions/worker/gpu.py), which both import it
from here so that neither imports the other's types."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from functions.runtime.aws import describe_error, public_reason

if TYPE_CHECKING:
    from functions.runtime.jobs import Job, JobMessage


@dataclass
class Delivery:
    """One record of the batch, as it goes through the worker."""

    message_id: str
    receipt_handle: str
    receive_count: int
    message: JobMessage | None = None
    job: Job | None = None
    inputs: list[Any] | None = None
    outputs: list[Any] | None = None
    failure: str | None = None
    """Why the record failed, as the job shows it: SQS delivers it again (or moves it to
    the DLQ)."""
    detail: str | None = None
    """The failure in full, for the logs only (AWS's messages name accounts and roles)."""
    deferred: bool = False
    """Not run: the invocation had no time left for it. It comes back at once."""
    gpu: bool = False
    """A job for the GPU layer: dispatched or followed, not run here (unless it falls back)."""
    done: bool = False
    finished: bool = False
    """The job reached succeeded or failed in this invocation: its callback is due."""

    def fail(self, error: BaseException) -> None:
        self.failure = public_reason(error)
        self.detail = describe_error(error)

    @property
    def log_keys(self) -> dict[str, Any]:
        if self.message is None:
            return {"message_id": self.message_id}
        return {
            "message_id": self.message_id,
            "job_id": self.message.job_id,
            "correlation_id": self.message.correlation_id,
            "tenant": self.message.tenant,
        }
