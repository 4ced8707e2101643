"""The worker's logic: one SQS batch of job messages in, one outcome per record out.

- Each record claims its job with a conditional write; a finished or cancelled job is
  not computed again (a duplicate or late delivery succeeds without doing anything).
- The batch's jobs are grouped by model version, and each group's inputs go to the model
  together: sorted by length and cut into chunks that pad little (a runner whose results
  must not depend on batch-mates, like an int8 embedder, still runs one text per call).
  If a group's run fails, each job runs alone, so a record that fails fails alone.
- Inputs a model refuses, or inputs gone from S3, fail their job at once (retrying cannot
  fix them). Any other error fails the record: SQS delivers it again after a backoff, and
  on its last allowed delivery the job is marked failed with the reason as the message
  moves to the dead-letter queue.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from functions.runtime.aws import describe_error
from functions.runtime.job_store import JobInputsMissing
from functions.runtime.job_view import job_view
from functions.runtime.jobs import JobMessage, JobStatus, MalformedMessage
from functions.runtime.models import InputError, ModelKey
from functions.runtime.observability import logger

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from functions.runtime.callbacks import CallbackSender
    from functions.runtime.environment import ExecutionEnvironment
    from functions.runtime.job_service import JobService
    from functions.runtime.jobs import Job

CHUNK_INPUTS = 64
"""Inputs per session run within a model's group, at most: bigger chunks gain little on a
CPU and pad more."""
PADDING_WASTE = 0.1
"""A chunk of length-sorted inputs ends where padding to its longest would add more than
this share of its real size: a batch of short sentences padded to its longest text runs
slower than one call per record (bench/worker_throughput.py)."""
CALLBACK_MARGIN_S = 2.0
"""Time kept back from the invocation's deadline when delivering callbacks."""


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
    """Why the record failed: SQS delivers it again (or moves it to the DLQ)."""
    done: bool = False

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


class JobWorker:
    def __init__(
        self,
        environment: ExecutionEnvironment,
        *,
        jobs: Callable[[], JobService],
        callbacks: CallbackSender | None = None,
        batched: bool = True,
    ) -> None:
        self.environment = environment
        self._jobs = jobs
        self.callbacks = callbacks
        self.batched = batched
        declaration = environment.declaration
        self.max_receive_count = declaration.jobs.max_receive_count
        self.retry_delay_s = declaration.jobs.retry_delay_s
        self.visibility_timeout_s = declaration.visibility_timeout_s()

    def process(
        self, records: list[dict[str, Any]], *, deadline: float | None = None
    ) -> dict[str, str]:
        """Run the batch; the failed records' message ids, each with its reason."""
        jobs = self._jobs()
        deliveries = [self._claim(record, jobs) for record in records]
        groups: dict[ModelKey, list[Delivery]] = defaultdict(list)
        for delivery in deliveries:
            if delivery.job is not None and not delivery.done and delivery.failure is None:
                groups[ModelKey(delivery.job.model, delivery.job.version)].append(delivery)
        for key, group in groups.items():
            self._run(key, group, jobs)
        for delivery in deliveries:
            if delivery.failure is not None:
                self._retry_or_give_up(delivery, jobs)
        self._callbacks(deliveries, jobs, deadline)
        return {d.message_id: d.failure for d in deliveries if d.failure is not None}

    def _claim(self, record: dict[str, Any], jobs: JobService) -> Delivery:
        delivery = Delivery(
            message_id=record["messageId"],
            receipt_handle=record["receiptHandle"],
            receive_count=int(record.get("attributes", {}).get("ApproximateReceiveCount", 1)),
        )
        try:
            delivery.message = message = JobMessage.decode(record["body"])
        except MalformedMessage as error:
            delivery.failure = str(error)
            logger.error("not a job message", extra={**delivery.log_keys, "error": str(error)})
            return delivery
        try:
            job = jobs.store.start(
                message.tenant, message.job_id, lease_s=self.visibility_timeout_s
            )
            if job is None:
                delivery.done = True
                logger.info(
                    "job already finished or cancelled: delivery dropped", extra=delivery.log_keys
                )
                return delivery
            delivery.job = job
            logger.info(
                "job started",
                extra={**delivery.log_keys, "attempt": delivery.receive_count, "model": job.model},
            )
            if message.inputs is not None:
                delivery.inputs = message.inputs
            else:
                delivery.inputs = jobs.store.inputs(message.inputs_key or "")
        except JobInputsMissing as error:
            # S3 is strongly consistent: inputs that are not there will not appear.
            self._finish_failed(delivery, str(error), jobs)
        except Exception as error:
            delivery.failure = describe_error(error)
        return delivery

    def _run(self, key: ModelKey, group: list[Delivery], jobs: JobService) -> None:
        started = time.perf_counter()
        try:
            with self.environment.cache.use(key) as loaded:
                runner = loaded.runner
                runnable = []
                for delivery in group:
                    try:
                        runner.check(delivery.inputs or [])
                        runnable.append(delivery)
                    except InputError as error:
                        self._finish_failed(delivery, f"invalid inputs: {error}", jobs)
                if self.batched and len(runnable) > 1:
                    try:
                        self._run_together(runner, runnable)
                    except Exception as error:
                        logger.warning(
                            "batched run failed; running each job alone",
                            extra={"model": str(key), "error": describe_error(error)},
                        )
                        self._run_alone(runner, runnable)
                else:
                    self._run_alone(runner, runnable)
        except Exception as error:  # the model would not load
            for delivery in group:
                if not delivery.done and delivery.failure is None:
                    delivery.failure = describe_error(error)
            return
        model_ms = (time.perf_counter() - started) * 1000
        logger.info(
            "batch run",
            extra={
                "model": key.name,
                "version": key.version,
                "jobs": len(group),
                "model_ms": round(model_ms, 3),
            },
        )
        for delivery in group:
            if delivery.outputs is not None:
                self._finish_succeeded(delivery, jobs)

    def _run_together(self, runner: Any, group: list[Delivery]) -> None:
        """One model call for the whole group, in length-sorted chunks."""
        inputs = [item for delivery in group for item in delivery.inputs or []]
        sizes = [_size(item) for item in inputs]
        order = sorted(range(len(inputs)), key=lambda index: sizes[index])
        outputs: list[Any] = [None] * len(inputs)
        for chunk in _chunks(order, sizes):
            results = runner.run(runner.check([inputs[index] for index in chunk]))
            for index, output in zip(chunk, results, strict=True):
                outputs[index] = output
        offset = 0
        for delivery in group:
            count = len(delivery.inputs or [])
            delivery.outputs = outputs[offset : offset + count]
            offset += count

    def _run_alone(self, runner: Any, group: list[Delivery]) -> None:
        for delivery in group:
            try:
                inputs = delivery.inputs or []
                outputs: list[Any] = []
                for start in range(0, len(inputs), CHUNK_INPUTS):
                    outputs.extend(runner.run(runner.check(inputs[start : start + CHUNK_INPUTS])))
                delivery.outputs = outputs
            except Exception as error:
                delivery.failure = describe_error(error)

    def _finish_succeeded(self, delivery: Delivery, jobs: JobService) -> None:
        assert delivery.job is not None
        result = orjson.dumps({"outputs": delivery.outputs}, option=orjson.OPT_SERIALIZE_NUMPY)
        try:
            stored = jobs.store.succeed(delivery.job, result)
        except Exception as error:
            delivery.failure = describe_error(error)
            return
        delivery.done = True
        logger.info(
            "job succeeded" if stored else "job had already finished: result not stored again",
            extra={**delivery.log_keys, "bytes": len(result)},
        )

    def _finish_failed(self, delivery: Delivery, reason: str, jobs: JobService) -> None:
        assert delivery.job is not None
        try:
            jobs.store.fail(delivery.job.tenant, delivery.job.job_id, reason)
        except Exception as error:
            delivery.failure = describe_error(error)
            return
        delivery.done = True
        logger.info("job failed", extra={**delivery.log_keys, "error": reason})

    def _retry_or_give_up(self, delivery: Delivery, jobs: JobService) -> None:
        reason = delivery.failure or "unknown"
        last = delivery.receive_count >= self.max_receive_count
        try:
            if delivery.message is not None:
                tenant, job_id = delivery.message.tenant, delivery.message.job_id
                if last:
                    jobs.store.fail(
                        tenant,
                        job_id,
                        f"gave up after {delivery.receive_count} deliveries: {reason}; the "
                        "message is in the dead-letter queue",
                    )
                else:
                    jobs.store.note_error(tenant, job_id, reason)
            if not last:
                delay = min(
                    self.retry_delay_s * 2 ** (delivery.receive_count - 1),
                    self.visibility_timeout_s,
                )
                jobs.queue.retry_later(delivery.receipt_handle, round(delay))
        except Exception as error:
            # The record still fails: SQS redelivers it when its visibility times out.
            logger.warning(
                "could not record the failure",
                extra={**delivery.log_keys, "error": describe_error(error)},
            )
        logger.error(
            "job attempt failed"
            + ("; moving to the dead-letter queue" if last else "; will retry"),
            extra={**delivery.log_keys, "attempt": delivery.receive_count, "error": reason},
        )

    def _callbacks(
        self, deliveries: list[Delivery], jobs: JobService, deadline: float | None
    ) -> None:
        if self.callbacks is None:
            return
        for delivery in deliveries:
            job = delivery.job
            if job is None or job.callback_url is None or not delivery.done:
                continue
            finished = jobs.store.get(job.tenant, job.job_id)
            if finished is None or finished.status not in (JobStatus.SUCCEEDED, JobStatus.FAILED):
                continue
            body = orjson.dumps(job_view(finished, jobs.store))
            until = (deadline or time.monotonic() + 30) - CALLBACK_MARGIN_S
            try:
                outcome = self.callbacks.deliver(job.callback_url, job.tenant, body, deadline=until)
                jobs.store.record_callback(job.tenant, job.job_id, outcome)
            except Exception as error:
                outcome = {"delivered": False, "error": describe_error(error)}
            logger.info("callback", extra={**delivery.log_keys, **outcome})


def _size(item: Any) -> int:
    return len(item) if isinstance(item, str | list) else 0


def _chunks(order: list[int], sizes: list[int]) -> Iterator[list[int]]:
    """Consecutive runs of `order` (indices sorted by size), each at most CHUNK_INPUTS long
    and cut before the input whose size, as every member's padded size, would exceed the
    chunk's real size by more than PADDING_WASTE."""
    chunk: list[int] = []
    real = 0
    for index in order:
        size = sizes[index]
        padded = (len(chunk) + 1) * size
        if chunk and (len(chunk) == CHUNK_INPUTS or padded > (1 + PADDING_WASTE) * (real + size)):
            yield chunk
            chunk, real = [], 0
        chunk.append(index)
        real += size
    if chunk:
        yield chunk
