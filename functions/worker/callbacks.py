"""The callbacks queue's consumer: one SQS batch of callback messages in, one outcome per
record out (the worker function's second event source; see functions/worker/handler.py).

- Each record is one attempt: the job's callback POSTed once, within the sender's
  per-attempt deadline. The records of a batch are sent side by side, so a slow receiver
  holds only its own record.
- A retryable failure (a 5xx, 408, 429, a timeout, a refused connection) fails the record:
  it comes back after a doubling backoff (`jobs.retry_delay_s`), and after
  `jobs.callback_attempts` deliveries the callbacks queue moves it to its dead-letter queue
  (the job says failed; a redrive tries again). A refusal (another 4xx, a redirect, a URL
  that no longer passes the checks) is final: the message is deleted.
- The job record says how it went: `callback.state` enqueued (with the last error while
  it is retried), then delivered or failed. A duplicate message of a delivered callback
  sends nothing.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import orjson

from functions.runtime.aws import describe_error, public_reason
from functions.runtime.callback_queue import CallbackMessage, CallbackState
from functions.runtime.job_view import job_view
from functions.runtime.jobs import MalformedMessage
from functions.runtime.observability import logger

if TYPE_CHECKING:
    from collections.abc import Callable

    from functions.runtime.callback_queue import CallbackQueue
    from functions.runtime.callbacks import CallbackSender
    from functions.runtime.job_service import JobService

MARGIN_S = 1.0
"""Time kept back from the invocation's deadline: an attempt ends before the invocation."""
SENDERS = 10
"""Callbacks sent at once, at most (a batch holds 10 records)."""


class CallbackWorker:
    def __init__(
        self,
        *,
        jobs: Callable[[], JobService],
        queue: Callable[[], CallbackQueue] | None,
        sender: CallbackSender,
        attempts: int,
        retry_delay_s: float,
        max_delay_s: int,
    ) -> None:
        self._jobs = jobs
        self._queue = queue
        self.sender = sender
        self.attempts = attempts
        """The callbacks queue's maxReceiveCount: the delivery that gives up."""
        self.retry_delay_s = retry_delay_s
        self.max_delay_s = max_delay_s

    def split(
        self, records: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The records from the callbacks queue, and the others (the jobs queue's)."""
        if self._queue is None:
            return [], records
        queue = self._queue()
        ours = [queue.holds(str(record.get("eventSourceARN", ""))) for record in records]
        return (
            [record for record, mine in zip(records, ours, strict=True) if mine],
            [record for record, mine in zip(records, ours, strict=True) if not mine],
        )

    def process(
        self, records: list[dict[str, Any]], *, deadline: float | None = None
    ) -> dict[str, str]:
        """Send the batch's callbacks; the failed records' message ids, with the reason."""
        if not records:
            return {}
        until = (deadline if deadline is not None else time.monotonic() + 60) - MARGIN_S
        with ThreadPoolExecutor(max_workers=min(len(records), SENDERS)) as pool:
            failures = list(pool.map(lambda record: self._send(record, until), records))
        return {
            record["messageId"]: failure
            for record, failure in zip(records, failures, strict=True)
            if failure is not None
        }

    def _send(self, record: dict[str, Any], deadline: float) -> str | None:
        receive_count = int(record.get("attributes", {}).get("ApproximateReceiveCount", 1))
        log = {"message_id": record["messageId"], "attempt": receive_count}
        try:
            message = CallbackMessage.decode(record["body"])
        except MalformedMessage as error:
            logger.error("not a callback message", extra={**log, "error": str(error)})
            return str(error)  # it ends in the dead-letter queue, to be looked at
        log.update(
            job_id=message.job_id, tenant=message.tenant, correlation_id=message.correlation_id
        )
        jobs = self._jobs()
        try:
            job = jobs.store.get(message.tenant, message.job_id)
            if (
                job is None
                or job.callback_url is None
                or not job.finished
                or (job.callback or {}).get("state") == CallbackState.DELIVERED
            ):
                logger.info("callback with nothing to send: dropped", extra=log)
                return None
            body = orjson.dumps(job_view(job, jobs.store))
            attempt = self.sender.attempt(
                job.callback_url,
                job.tenant,
                body,
                deadline=deadline,
                secret_version=job.secret_version,
            )
            last = receive_count >= self.attempts
            if attempt.delivered:
                outcome: dict[str, Any] = {
                    "state": CallbackState.DELIVERED,
                    "delivered": True,
                    "attempts": receive_count,
                    "status": attempt.status,
                }
            else:
                final = last or not attempt.retryable
                outcome = {
                    "state": CallbackState.FAILED if final else CallbackState.ENQUEUED,
                    "delivered": False,
                    "attempts": receive_count if attempt.sent else receive_count - 1,
                    "error": attempt.error,
                }
            jobs.store.record_callback(message.tenant, message.job_id, outcome)
        except Exception as error:
            # The outcome is unknown or unrecorded: the record comes back, and tries again.
            logger.warning("callback attempt failed", extra={**log, "error": describe_error(error)})
            return f"callback not sent: {public_reason(error)}"
        logger.info("callback", extra={**log, **outcome})
        if attempt.delivered or not attempt.retryable:
            return None
        if last:
            return str(attempt.error)  # failing its last delivery moves it to the DLQ
        delay = self.retry_delay_s * 2 ** (receive_count - 1)
        try:
            assert self._queue is not None  # the record came from it
            self._queue().retry_later(record["receiptHandle"], round(min(delay, self.max_delay_s)))
        except Exception as error:
            logger.warning(
                "could not set the callback's backoff",
                extra={**log, "error": describe_error(error)},
            )
        return str(attempt.error)
