"""Submitting jobs: a record in the store, then a message on the queue.

The record is written first, with a conditional put, so that an Idempotency-Key claims its
job exactly once; the message follows, and its id is recorded on the job. A job whose
message cannot be sent is failed with the reason at once, never left queued with nothing
on the queue. Where even that cannot be recorded (AWS unreachable), or the answer to the
record's creation was lost, the record is queued without a message id: the client's retry
with the same Idempotency-Key (the API answered 503 "try again") sends the message.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import orjson

from functions.runtime.aws import describe_error, is_aws_failure, public_reason
from functions.runtime.jobs import (
    BACKEND_LAMBDA,
    Job,
    JobMessage,
    JobStatus,
    new_job_id,
    request_hash,
)
from functions.runtime.observability import logger

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from functions.runtime.job_queue import JobQueue
    from functions.runtime.job_store import JobStore

INLINE_INPUTS_MAX_BYTES = 192 * 1024
"""Inputs up to this size travel in the SQS message; larger ones wait in S3 (SQS takes
256 KiB in many tools and regions, 1 MiB at most)."""


NOT_QUEUED = "the job could not be queued"


class JobsUnavailable(RuntimeError):
    """The job path is not configured here, or AWS refused a call; only the latter
    is worth another try."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class IdempotencyConflict(Exception):
    """The Idempotency-Key names a job submitted with a different request."""


@dataclass(frozen=True)
class Submission:
    job: Job
    replayed: bool
    """The Idempotency-Key named an existing job: nothing new was queued."""


class JobService:
    def __init__(
        self,
        *,
        store: JobStore,
        queue: JobQueue,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.queue = queue
        self._clock = clock

    def submit(
        self,
        *,
        tenant: str,
        api_version: str,
        model: str,
        version: str,
        inputs: list[Any],
        correlation_id: str,
        callback_url: str | None = None,
        idempotency_key: str | None = None,
        backend: str = BACKEND_LAMBDA,
        inputs_json: bytes | None = None,
        secret_version: int = 1,
    ) -> Submission:
        """Store and queue a job for `backend` (see functions.runtime.routing);
        `inputs_json` is `inputs` as JSON, when the caller has it already. `tenant` is the
        tenant's id; `secret_version`, its callback secret's version now."""
        if inputs_json is None:
            inputs_json = orjson.dumps(inputs)
        request = self._new_job(
            tenant=tenant,
            api_version=api_version,
            model=model,
            version=version,
            inputs=inputs,
            inputs_json=inputs_json,
            correlation_id=correlation_id,
            callback_url=callback_url,
            idempotency_key=idempotency_key,
            backend=backend,
            secret_version=secret_version,
        )
        job, created = self._create(request)
        if not created:
            to_resend = self._replay(job, request)
            if to_resend is None:
                return Submission(job, replayed=True)
            job = to_resend
        message_id = self._send(job, inputs, inputs_json)
        return Submission(self._record_sent(job, message_id), replayed=not created)

    def _new_job(
        self,
        *,
        tenant: str,
        api_version: str,
        model: str,
        version: str,
        inputs: list[Any],
        inputs_json: bytes,
        correlation_id: str,
        callback_url: str | None,
        idempotency_key: str | None,
        backend: str,
        secret_version: int,
    ) -> Job:
        """The record of the request as a job queued now."""
        now = self._clock()
        return Job(
            tenant=tenant,
            job_id=new_job_id(tenant, idempotency_key),
            status=JobStatus.QUEUED,
            model=model,
            version=version,
            api_version=api_version,
            inputs=len(inputs),
            correlation_id=correlation_id,
            created_at=now,
            updated_at=now,
            expires_at=int(now + self.store.ttl_s),
            request_hash=request_hash(model, version, inputs_json, callback_url),
            callback_url=callback_url,
            backend=backend,
            secret_version=secret_version,
        )

    def _create(self, request: Job) -> tuple[Job, bool]:
        """Store the job, claiming its id (and so its Idempotency-Key) with a conditional
        put: the job and True, or, when the id was taken, the stored job and False."""
        try:
            return self.store.create(request)
        except Exception as error:
            logger.error("job not stored", extra={"error": describe_error(error)})
            raise JobsUnavailable(
                f"the job store refused the job ({public_reason(error)})"
            ) from None

    def _replay(self, stored: Job, request: Job) -> Job | None:
        """A replay of the job the request's Idempotency-Key names: None when it is
        answered as it stands (its message was sent, a worker has it, or it finished);
        the job, queued again and read back, when its message must be sent again."""
        if stored.request_hash != request.request_hash:
            raise IdempotencyConflict(
                "this Idempotency-Key was used for a different request "
                f"(job {stored.job_id}); use a new key for a new job"
            )
        if not self._unsent(stored):
            return None
        # Its message may never have been sent (503 "try again", the submitting
        # invocation died first, or the answer to the record's creation was lost): the
        # retry with the same key sends it. A duplicate message is harmless: a delivery
        # of a finished job claims nothing, and of two at once only one result is stored.
        try:
            if stored.status == JobStatus.FAILED and not self.store.requeue(
                stored.tenant, stored.job_id
            ):
                return None
            return self.store.get(stored.tenant, stored.job_id) or stored
        except Exception as error:
            logger.error(
                "job not requeued",
                extra={"job_id": stored.job_id, "error": describe_error(error)},
            )
            raise JobsUnavailable(
                f"the job store could not be read ({public_reason(error)})"
            ) from None

    def _send(self, job: Job, inputs: list[Any], inputs_json: bytes) -> str:
        """Send the job's message; its SQS id. A send that fails (or its inputs' put in S3)
        fails the job with the reason, unless a worker has it already."""
        try:
            return self.queue.send(self._message(job, inputs, inputs_json))
        except Exception as error:
            logger.error(
                "job not queued", extra={"job_id": job.job_id, "error": describe_error(error)}
            )
            reason = f"{NOT_QUEUED} ({public_reason(error)})"
            with contextlib.suppress(Exception):  # the record says queued, attempts 0: see _unsent
                self.store.fail_unsent(job.tenant, job.job_id, reason)
            raise JobsUnavailable(reason) from None

    def _message(self, job: Job, inputs: list[Any], inputs_json: bytes) -> JobMessage:
        """The job's message; inputs over INLINE_INPUTS_MAX_BYTES are put in S3 first, and
        the message points at them."""
        message = JobMessage(
            tenant=job.tenant,
            job_id=job.job_id,
            model=job.model,
            version=job.version,
            correlation_id=job.correlation_id,
        )
        if len(inputs_json) > INLINE_INPUTS_MAX_BYTES:
            return replace(message, inputs_key=self.store.put_inputs(job, inputs_json))
        return replace(message, inputs=inputs)

    def _record_sent(self, job: Job, message_id: str) -> Job:
        """The job with its message's id, once written on its record."""
        try:
            self.store.record_sent(job.tenant, job.job_id, message_id)
        except Exception as error:
            # Queued all the same. Without the id, a replay sends the message again.
            logger.warning(
                "job queued, its message id not recorded",
                extra={"job_id": job.job_id, "error": describe_error(error)},
            )
            return job
        return replace(job, message_id=message_id)

    def get(self, tenant: str, job_id: str) -> Job | None:
        """The tenant's job, or None when the tenant has no job by that id."""
        with _reading_store():
            return self.store.get(tenant, job_id)

    def cancel(self, tenant: str, job_id: str) -> Job | None:
        """The tenant's job once cancelled, or None when the tenant has no job by that id;
        JobNotCancellable once it runs or has finished."""
        with _reading_store():
            job = self.store.cancel(tenant, job_id)
        if job is not None:
            logger.info("job cancelled", extra={"job_id": job_id})
        return job

    def _unsent(self, job: Job) -> bool:
        """A job no worker has seen whose message may not be on the queue: its send
        failed, or no message id was recorded (the send's outcome is unknown)."""
        if job.attempts != 0:
            return False
        if job.status == JobStatus.QUEUED:
            return job.message_id is None
        return job.status == JobStatus.FAILED and (job.error or "").startswith(NOT_QUEUED)


@contextlib.contextmanager
def _reading_store() -> Iterator[None]:
    """AWS failing a read is JobsUnavailable (worth another try); any other error is a bug and
    stays what it is."""
    try:
        yield
    except Exception as error:
        if not is_aws_failure(error):
            raise
        logger.error("job store unavailable", extra={"error": describe_error(error)})
        raise JobsUnavailable(f"the job store could not be read ({public_reason(error)})") from None
