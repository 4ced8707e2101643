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
- A finished job's callback goes onto the callbacks queue, never out from here: a slow
  receiver cannot hold the batch. A delivery that finds its job finished with the callback
  still pending (the worker that finished it died first) queues it, so each callback is
  queued at least once.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import orjson

from functions.runtime.aws import describe_error, public_reason
from functions.runtime.callback_queue import CallbackMessage, CallbackState
from functions.runtime.job_store import JobInputsMissing
from functions.runtime.jobs import (
    BACKEND_LAMBDA,
    BACKEND_MODAL,
    JobMessage,
    JobStatus,
    MalformedMessage,
)
from functions.runtime.models import InputError, ModelKey, OverflowingInputError
from functions.runtime.observability import job_outcome_metrics, logger
from functions.worker.delivery import Delivery
from functions.worker.gpu import NO_GPU_LAYER, GpuDispatcher, give_up, to_cpu

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from functions.runtime.callback_queue import CallbackQueue
    from functions.runtime.environment import ExecutionEnvironment
    from functions.runtime.gpu import GpuBackend
    from functions.runtime.job_service import JobService
    from functions.runtime.jobs import Job

CHUNK_INPUTS = 64
"""Inputs per session run within a model's group, at most: bigger chunks gain little on a
CPU and pad more."""
PADDING_WASTE = 0.1
"""A chunk of length-sorted inputs ends where padding to its longest would add more than
this share of its real size: a batch of short sentences padded to its longest text runs
slower than one call per record (bench/worker_throughput.py)."""
RUN_MARGIN = 0.1
"""Share of the worker's timeout (at least a second) kept free when starting a model run:
less left, and the rest of the batch goes back to the queue rather than die with the
invocation."""


class JobWorker:
    def __init__(
        self,
        environment: ExecutionEnvironment,
        *,
        jobs: Callable[[], JobService],
        callbacks: Callable[[], CallbackQueue] | None = None,
        gpu: Callable[[], GpuBackend] | None = None,
        batched: bool = True,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.environment = environment
        self._jobs = jobs
        self.callbacks = callbacks
        self.batched = batched
        declaration = environment.declaration
        self.max_receive_count = declaration.jobs.max_receive_count
        self.retry_delay_s = declaration.jobs.retry_delay_s
        self.visibility_timeout_s = declaration.visibility_timeout_s()
        self.run_margin_s = max(1.0, RUN_MARGIN * environment.function.timeout_s)
        self.gpu = (
            GpuDispatcher(
                declaration,
                declaration.gpu,
                gpu,
                succeed=self._finish_succeeded,
                fail=self._finish_failed,
                clock=clock,
                sleep=sleep,
                lease_s=self.visibility_timeout_s,
            )
            if gpu is not None and declaration.gpu is not None
            else None
        )

    def process(
        self, records: list[dict[str, Any]], *, deadline: float | None = None
    ) -> dict[str, str]:
        """Run the batch; the failed records' message ids, each with its reason."""
        jobs = self._jobs()
        deliveries = [self._claim(record, jobs) for record in records]
        for delivery in deliveries:
            if delivery.gpu and not delivery.done and delivery.failure is None:
                self._on_gpu(delivery, jobs, deadline)
        groups: dict[ModelKey, list[Delivery]] = defaultdict(list)
        for delivery in deliveries:
            if (
                delivery.job is not None
                and not delivery.gpu
                and not delivery.done
                and delivery.failure is None
            ):
                groups[ModelKey(delivery.job.model, delivery.job.version)].append(delivery)
        for key, group in groups.items():
            self._run(key, group, jobs, deadline)
        for delivery in deliveries:
            if delivery.failure is not None:
                self._retry_or_give_up(delivery, jobs)
        self._queue_callbacks(deliveries, jobs)
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
            delivery.failure = delivery.detail = str(error)
            logger.error("not a job message", extra={**delivery.log_keys, "error": str(error)})
            return delivery
        try:
            if message.follow_up is not None:
                return self._claim_follow_up(delivery, jobs)
            job = jobs.store.start(
                message.tenant,
                message.job_id,
                lease_s=self.visibility_timeout_s,
                delivery=delivery.receive_count,
            )
            if job is None:
                delivery.done = True
                logger.info(
                    "job already finished or cancelled: delivery dropped", extra=delivery.log_keys
                )
                return delivery
            delivery.job = job
            delivery.gpu = job.backend == BACKEND_MODAL
            logger.info(
                "job started",
                extra={
                    **delivery.log_keys,
                    "attempt": delivery.receive_count,
                    "model": job.model,
                    "backend": job.backend,
                },
            )
            if not (delivery.gpu and job.gpu_call_id):  # a call being followed needs none
                self._load_inputs(delivery, jobs)
        except JobInputsMissing as error:
            # S3 is strongly consistent: inputs that are not there will not appear.
            self._finish_failed(delivery, str(error), jobs)
        except Exception as error:
            delivery.fail(error)
        return delivery

    def _claim_follow_up(self, delivery: Delivery, jobs: JobService) -> Delivery:
        """A message that follows a GPU call works only while it holds the job's current
        token (a duplicate or a leftover is dropped); its delivery is claimed as any job
        message's is (SQS's count of it and a lease)."""
        message = delivery.message
        assert message is not None and message.follow_up is not None
        job = jobs.store.claim_follow_up(
            message.tenant,
            message.job_id,
            message.follow_up,
            delivery=delivery.receive_count,
            lease_s=self.visibility_timeout_s,
        )
        if job is None:
            delivery.done = True
            logger.info("GPU follow-up with nothing to do: dropped", extra=delivery.log_keys)
            return delivery
        delivery.job = job
        delivery.gpu = True
        return delivery

    def _load_inputs(self, delivery: Delivery, jobs: JobService) -> None:
        message = delivery.message
        assert message is not None
        if message.inputs is not None:
            delivery.inputs = message.inputs
        else:
            delivery.inputs = jobs.store.inputs(message.inputs_key or "")

    def _on_gpu(self, delivery: Delivery, jobs: JobService, deadline: float | None) -> None:
        """Dispatch or follow a GPU job, or hand a fallen-back one to the CPU worker."""
        assert delivery.job is not None
        if self._defer([delivery], deadline):
            return
        try:
            if delivery.job.backend == BACKEND_LAMBDA:
                to_cpu(delivery, jobs)
            elif self.gpu is not None:
                self.gpu.handle(delivery, jobs, deadline)
            else:
                give_up(
                    self.environment.declaration,
                    delivery,
                    jobs,
                    NO_GPU_LAYER,
                    fail=self._finish_failed,
                )
        except Exception as error:
            delivery.fail(error)

    def _run(
        self, key: ModelKey, group: list[Delivery], jobs: JobService, deadline: float | None
    ) -> None:
        """Run a model's share of the batch: small jobs together, a job bigger than a
        chunk on its own; each job is stored as soon as its outputs are complete."""
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
                small = [d for d in runnable if len(d.inputs or []) <= CHUNK_INPUTS]
                large = [d for d in runnable if len(d.inputs or []) > CHUNK_INPUTS]
                if self.batched and len(small) > 1 and not self._defer(small, deadline):
                    try:
                        self._run_together(runner, small, deadline)
                    except Exception as error:
                        logger.warning(
                            "batched run failed; running each job alone",
                            extra={"model": str(key), "error": describe_error(error)},
                        )
                    else:
                        for delivery in small:
                            self._finish_succeeded(delivery, jobs)
                        small = []
                self._run_alone(runner, [*small, *large], jobs, deadline)
        except Exception as error:  # the model would not load
            for delivery in group:
                if not delivery.done and delivery.failure is None:
                    delivery.fail(error)
            return
        logger.info(
            "batch run",
            extra={
                "model": key.name,
                "version": key.version,
                "jobs": len(group),
                "model_ms": round((time.perf_counter() - started) * 1000, 3),
            },
        )

    def _run_together(self, runner: Any, group: list[Delivery], deadline: float | None) -> None:
        """The group's inputs in length-sorted chunks that pad little (out of time half-way,
        it raises, and the jobs run one by one, each watching the deadline)."""
        inputs = [item for delivery in group for item in delivery.inputs or []]
        sizes = [_size(item) for item in inputs]
        order = sorted(range(len(inputs)), key=lambda index: sizes[index])
        outputs: list[Any] = [None] * len(inputs)
        for number, chunk in enumerate(chunks(order, sizes)):
            if number and self._out_of_time(deadline):
                raise TimeoutError("the invocation ran out of time in a batched run")
            results = runner.run(runner.check([inputs[index] for index in chunk]))
            for index, output in zip(chunk, results, strict=True):
                outputs[index] = output
        offset = 0
        for delivery in group:
            count = len(delivery.inputs or [])
            delivery.outputs = outputs[offset : offset + count]
            offset += count

    def _run_alone(
        self, runner: Any, group: list[Delivery], jobs: JobService, deadline: float | None
    ) -> None:
        for position, delivery in enumerate(group):
            if self._defer(group[position:], deadline):
                return
            inputs = delivery.inputs or []
            outputs: list[Any] = []
            try:
                for start in range(0, len(inputs), CHUNK_INPUTS):
                    if start and self._out_of_time(deadline):
                        raise TimeoutError(
                            f"the worker's {self.environment.function.timeout_s} s ran out "
                            f"after {start} of {len(inputs)} inputs"
                        )
                    outputs.extend(runner.run(runner.check(inputs[start : start + CHUNK_INPUTS])))
            except OverflowingInputError as error:
                # The client's inputs, not a passing failure: retrying cannot help.
                at = start + error.index
                self._finish_failed(delivery, f"invalid inputs: {OverflowingInputError(at)}", jobs)
                continue
            except Exception as error:
                delivery.fail(error)
                continue
            delivery.outputs = outputs
            self._finish_succeeded(delivery, jobs)

    def _out_of_time(self, deadline: float | None) -> bool:
        return deadline is not None and deadline - time.monotonic() < self.run_margin_s

    def _defer(self, deliveries: list[Delivery], deadline: float | None) -> bool:
        """Send `deliveries` back to the queue, unrun, if the invocation is out of time."""
        if not self._out_of_time(deadline):
            return False
        for delivery in deliveries:
            delivery.failure = delivery.detail = "deferred: the invocation ran out of time"
            delivery.deferred = True
        return True

    def _finish_succeeded(self, delivery: Delivery, jobs: JobService) -> None:
        assert delivery.job is not None
        if len(delivery.outputs or []) != delivery.job.inputs:
            # Never store a result that is not one output per input.
            delivery.failure = delivery.detail = (
                f"{len(delivery.outputs or [])} outputs for {delivery.job.inputs} inputs"
            )
            return
        result = orjson.dumps({"outputs": delivery.outputs}, option=orjson.OPT_SERIALIZE_NUMPY)
        try:
            stored = jobs.store.succeed(delivery.job, result)
        except Exception as error:
            delivery.fail(error)
            return
        delivery.done = True
        delivery.finished = stored
        outcome = job_outcome_metrics(delivery.job.backend, "succeeded") if stored else {}
        logger.info(
            "job succeeded" if stored else "job had already finished: result not stored again",
            extra={**delivery.log_keys, "bytes": len(result), **outcome},
        )

    def _finish_failed(self, delivery: Delivery, reason: str, jobs: JobService) -> None:
        assert delivery.job is not None
        try:
            failed = jobs.store.fail(delivery.job.tenant, delivery.job.job_id, reason)
        except Exception as error:
            delivery.fail(error)
            return
        delivery.done = True
        delivery.finished = failed
        outcome = job_outcome_metrics(delivery.job.backend, "failed") if failed else {}
        logger.info("job failed", extra={**delivery.log_keys, "error": reason, **outcome})

    def _retry_or_give_up(self, delivery: Delivery, jobs: JobService) -> None:
        reason = delivery.failure or "unknown"
        last = delivery.receive_count >= self.max_receive_count
        try:
            if delivery.message is not None:
                tenant, job_id = delivery.message.tenant, delivery.message.job_id
                if last:
                    delivery.finished = jobs.store.fail(
                        tenant,
                        job_id,
                        f"gave up after {delivery.receive_count} deliveries: {reason}; the "
                        "message is in the dead-letter queue",
                        # A follow-up fails the job only while it is the one following it.
                        follow_up=delivery.message.follow_up,
                    )
                elif not delivery.deferred:
                    jobs.store.note_error(tenant, job_id, reason)
            if not last:
                delay = (
                    0.0
                    if delivery.deferred
                    else self.retry_delay_s * 2 ** (delivery.receive_count - 1)
                )
                jobs.queue.retry_later(
                    delivery.receipt_handle, round(min(delay, self.visibility_timeout_s))
                )
        except Exception as error:
            # The record still fails: SQS redelivers it when its visibility times out.
            logger.warning(
                "could not record the failure",
                extra={**delivery.log_keys, "error": describe_error(error)},
            )
        backend = delivery.job.backend if delivery.job else "lambda"
        logger.error(
            "job attempt failed"
            + ("; moving to the dead-letter queue" if last else "; will retry"),
            extra={
                **delivery.log_keys,
                "attempt": delivery.receive_count,
                "error": delivery.detail or reason,
                **(job_outcome_metrics(backend, "failed") if delivery.finished and last else {}),
            },
        )

    def _queue_callbacks(self, deliveries: list[Delivery], jobs: JobService) -> None:
        """Queue the callback of each job finished here, and of each job a delivery found
        finished with its callback pending. A callback that cannot be queued fails its
        record: the job's message comes back, finds the job finished, and tries again."""
        if self.callbacks is None:
            return
        for delivery in deliveries:
            if delivery.message is None or not (delivery.finished or delivery.job is None):
                continue
            try:
                job = self._callback_due(delivery, jobs)
                if job is None:
                    continue
                self.callbacks().send(CallbackMessage(job.tenant, job.job_id, job.correlation_id))
                jobs.store.callback_enqueued(job.tenant, job.job_id)
            except Exception as error:
                self._callback_not_queued(delivery, jobs, error)
                continue
            logger.info("callback queued", extra=delivery.log_keys)

    def _callback_due(self, delivery: Delivery, jobs: JobService) -> Job | None:
        """The job whose callback this delivery must queue, if any."""
        if delivery.finished and delivery.job is not None:
            job: Job | None = delivery.job  # as claimed (running): it finished here just now
        elif delivery.finished and delivery.message is not None:
            # Failed on its last delivery before it could be claimed.
            job = jobs.store.get(delivery.message.tenant, delivery.message.job_id)
        elif delivery.done and delivery.job is None and delivery.message is not None:
            # Nothing to run: the job may have finished in an invocation that died before
            # it queued the callback (the job's message came back for that reason). A
            # cancelled job is not called back: its tenant asked for the cancellation.
            job = jobs.store.get(delivery.message.tenant, delivery.message.job_id)
            if (
                job is None
                or job.callback is not None
                or job.status not in (JobStatus.SUCCEEDED, JobStatus.FAILED)
            ):
                return None
        else:
            return None
        return job if job is not None and job.callback_url is not None else None

    def _callback_not_queued(self, delivery: Delivery, jobs: JobService, error: Exception) -> None:
        delivery.failure = f"the callback could not be queued: {public_reason(error)}"
        delivery.detail = describe_error(error)
        last = delivery.receive_count >= self.max_receive_count
        try:
            if last and delivery.message is not None:
                # The message moves to the dead-letter queue: say so on the job.
                jobs.store.record_callback(
                    delivery.message.tenant,
                    delivery.message.job_id,
                    {
                        "state": CallbackState.FAILED,
                        "delivered": False,
                        "attempts": 0,
                        "error": delivery.failure,
                    },
                )
            else:
                delay = self.retry_delay_s * 2 ** (delivery.receive_count - 1)
                jobs.queue.retry_later(
                    delivery.receipt_handle, round(min(delay, self.visibility_timeout_s))
                )
        except Exception as recording:
            logger.warning(
                "could not record the failure",
                extra={**delivery.log_keys, "error": describe_error(recording)},
            )
        logger.error(
            "callback not queued; the job's message will come back",
            extra={**delivery.log_keys, "error": delivery.detail},
        )


def _size(item: Any) -> int:
    return len(item) if isinstance(item, str | list) else 0


def chunks(order: list[int], sizes: list[int]) -> Iterator[list[int]]:
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
