"""The worker's side of GPU jobs: dispatch a job to the GPU layer, follow its call, bring
the result home, or hand the job to the CPU worker.

The worker never waits on the GPU. A job routed there is spawned (with retries and a
backoff, behind a circuit breaker), its call id stored on the job, and a message that
follows the call goes back on the jobs queue, delayed by gpu.poll_interval_s. Each such
message asks the layer once: finished, the result is stored like a CPU job's; still
running, another delayed message follows; failed, lost, or past gpu.deadline_s, the job
falls back to the CPU worker (routing.<model>.gpu_fallback: a plain job message of its own)
or fails with the reason. A GPU job is thus always either on the queue or finished, and
the GPU layer needs no AWS credentials (the worker brings the result home).

Exactly one message follows a call: each carries a token, and hands the following on to
the next through a conditional write on the job (JobStore.pass_follow_up). A duplicate or
leftover message holds a stale token and is dropped, so following never forks.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING

from functions.runtime.gpu import CallState, CircuitBreaker, GpuRefused, GpuUnavailable
from functions.runtime.observability import job_outcome_metrics, logger

if TYPE_CHECKING:
    from collections.abc import Callable

    from functions.runtime.gpu import GpuBackend
    from functions.runtime.job_service import JobService
    from functions.worker.delivery import Delivery
    from stratoserve.declaration import Declaration
    from stratoserve.declaration.schema import GpuSpec

SPAWN_BACKOFF_S = 0.5
"""The first pause between two tries of a spawn; it doubles each time."""
SPAWN_MARGIN_S = 5.0
"""Time a spawn's retries leave before the invocation's deadline."""

MAX_DELAY_S = 900
"""SQS's longest DelaySeconds."""

NO_GPU_LAYER = "this deployment declares no GPU layer ([gpu] in stratoserve.toml)"


class GpuDispatcher:
    def __init__(
        self,
        declaration: Declaration,
        spec: GpuSpec,
        backend: Callable[[], GpuBackend],
        *,
        succeed: Callable[[Delivery, JobService], None],
        fail: Callable[[Delivery, str, JobService], None],
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        lease_s: float = MAX_DELAY_S,
    ) -> None:
        self.declaration = declaration
        self.lease_s = lease_s
        """The worker's lease on a delivery (the queue's visibility timeout): a delayed
        re-dispatch must come back before it ends."""
        self.spec = spec
        self._backend_factory = backend
        self._backend: GpuBackend | None = None
        self._succeed = succeed
        self._fail = fail
        self._clock = clock
        self._sleep = sleep
        self.breaker = CircuitBreaker(failures=spec.breaker_failures, reset_s=spec.breaker_reset_s)
        self._last_failure = ""

    @property
    def backend(self) -> GpuBackend:
        if self._backend is None:
            self._backend = self._backend_factory()
        return self._backend

    def handle(self, delivery: Delivery, jobs: JobService, deadline: float | None = None) -> None:
        """Move a GPU job on by one step: dispatch it, or follow its call. `deadline` is
        the invocation's (time.monotonic()): spawns stop retrying before it."""
        job = delivery.job
        assert job is not None
        if job.gpu_call_id is None:
            self._dispatch(delivery, jobs, deadline)
        else:
            self._follow(delivery, jobs, job.gpu_call_id)

    # -- dispatch --------------------------------------------------------------------------

    def _dispatch(self, delivery: Delivery, jobs: JobService, deadline: float | None) -> None:
        job, message = delivery.job, delivery.message
        assert job is not None and message is not None
        try:
            call_id = self._spawn(
                job.model, job.version, delivery.inputs or [], message.correlation_id, deadline
            )
        except GpuRefused as refused:
            self.give_up(delivery, jobs, str(refused))
            return
        except GpuUnavailable as error:
            if self._may_fall_back(delivery) or self._past_deadline(delivery):
                self.give_up(delivery, jobs, self._late(delivery, str(error)))
            else:
                self._dispatch_later(delivery, jobs, str(error))
            return
        token = uuid.uuid4().hex
        try:
            recorded = jobs.store.record_dispatch(job.tenant, job.job_id, call_id, token)
        except Exception:
            self._cancel(call_id)  # unrecorded, it would run for nobody
            raise
        if not recorded:
            # A duplicate delivery dispatched the job already (or it moved on): spare call.
            self._cancel(call_id)
            delivery.done = True
            return
        logger.info(
            "job dispatched to the GPU",
            extra={**delivery.log_keys, "call_id": call_id, "backend": self.backend.name},
        )
        self._follow_later(delivery, jobs, call_id, token)

    def _spawn(
        self,
        model: str,
        version: str,
        inputs: list[object],
        correlation_id: str,
        deadline: float | None,
    ) -> str:
        """One call, tried up to gpu.dispatch_attempts times with a doubling pause (no
        pause that would outlast the invocation)."""
        error: GpuUnavailable | None = None
        for attempt in range(self.spec.dispatch_attempts):
            if not self.breaker.allow():
                raise GpuUnavailable(self._circuit_open())
            if attempt:
                pause = SPAWN_BACKOFF_S * 2 ** (attempt - 1)
                if deadline is not None and time.monotonic() + pause + SPAWN_MARGIN_S > deadline:
                    break
                self._sleep(pause)
            try:
                call_id = self.backend.spawn(model, version, list(inputs), correlation_id)
            except GpuUnavailable as unavailable:
                self._failed(unavailable)
                error = unavailable
                logger.warning(
                    "GPU spawn failed", extra={"attempt": attempt + 1, "error": str(unavailable)}
                )
                continue
            self.breaker.succeeded()
            return call_id
        assert error is not None
        raise error

    def _dispatch_later(self, delivery: Delivery, jobs: JobService, reason: str) -> None:
        """The layer is down and the job may not fall back: try again once the circuit may
        close (a fresh delayed message), until gpu.deadline_s."""
        assert delivery.message is not None and delivery.job is not None
        left = self.spec.deadline_s - self._elapsed(delivery)
        cap = min(self.spec.breaker_reset_s, MAX_DELAY_S, round(self.lease_s) // 2)
        delay = max(1, min(cap, round(left) + 1))
        try:
            jobs.queue.send(replace(delivery.message, call_id=None, follow_up=None), delay_s=delay)
            # Its own count of deliveries from now on (set after the send: until then, this
            # delivery's claim stands, and a failure brings it back).
            jobs.store.dispatch_later(delivery.job.tenant, delivery.job.job_id, reason)
        except Exception as error:
            delivery.fail(error)
            return
        logger.warning(
            "GPU layer unavailable: dispatch again later",
            extra={**delivery.log_keys, "delay_s": delay, "error": reason},
        )
        delivery.done = True

    # -- following a call --------------------------------------------------------------------

    def _follow(self, delivery: Delivery, jobs: JobService, call_id: str) -> None:
        job = delivery.job
        assert job is not None and job.follow_up is not None
        if not self.breaker.allow() and not self._past_deadline(delivery):
            # Spare the layer; past the deadline, it is asked once whatever the circuit.
            self._follow_later(delivery, jobs, call_id, job.follow_up)
            return
        try:
            status = self.backend.status(call_id)
        except GpuRefused as refused:
            self._cancel(call_id)
            self.give_up(delivery, jobs, str(refused))
            return
        except GpuUnavailable as error:
            self._failed(error)
            if self._past_deadline(delivery):
                self._cancel(call_id)
                self.give_up(delivery, jobs, self._late(delivery, str(error)))
            else:
                logger.warning("GPU poll failed", extra={**delivery.log_keys, "error": str(error)})
                self._follow_later(delivery, jobs, call_id, job.follow_up)
            return
        self.breaker.succeeded()
        if status.state == CallState.PENDING:
            if not self._past_deadline(delivery):
                self._follow_later(delivery, jobs, call_id, job.follow_up)
                return
            self._cancel(call_id)
            self.give_up(
                delivery,
                jobs,
                f"the GPU call did not finish within gpu.deadline_s ({self.spec.deadline_s} s); "
                "cancelled",
            )
            return
        if status.state == CallState.SUCCEEDED:
            outputs = status.outputs or []
            if len(outputs) != job.inputs:
                self.give_up(
                    delivery,
                    jobs,
                    f"the GPU call returned {len(outputs)} outputs for {job.inputs} inputs",
                )
                return
            delivery.outputs = outputs
            self._succeed(delivery, jobs)
            return
        reasons = {
            CallState.FAILED: f"the GPU call failed: {status.error}",
            CallState.CANCELLED: "the GPU call was cancelled",
            CallState.UNKNOWN: f"the GPU layer has no call {call_id} ({status.error})",
        }
        self.give_up(delivery, jobs, reasons[status.state])

    def _follow_later(self, delivery: Delivery, jobs: JobService, call_id: str, held: str) -> None:
        """Ask about the call again in gpu.poll_interval_s: a delayed message with a new
        token, which this delivery's token hands the following to. If the message cannot
        be sent, this delivery fails and SQS brings it back to ask instead."""
        job, message = delivery.job, delivery.message
        assert job is not None and message is not None
        successor = uuid.uuid4().hex
        try:
            jobs.queue.send(
                replace(message, call_id=call_id, follow_up=successor),
                delay_s=self.spec.poll_interval_s,
            )
            if not jobs.store.pass_follow_up(job.tenant, job.job_id, held, successor):
                logger.info("GPU call followed by another message", extra=delivery.log_keys)
        except Exception as error:
            delivery.fail(error)
            return
        delivery.done = True

    def _cancel(self, call_id: str) -> None:
        try:
            self.backend.cancel(call_id)
        except (GpuUnavailable, GpuRefused) as error:
            logger.warning(
                "GPU call not cancelled", extra={"call_id": call_id, "error": str(error)}
            )

    # -- giving up on the GPU ----------------------------------------------------------------

    def give_up(self, delivery: Delivery, jobs: JobService, reason: str) -> None:
        give_up(self.declaration, delivery, jobs, reason, fail=self._fail)

    def _may_fall_back(self, delivery: Delivery) -> bool:
        assert delivery.job is not None
        return may_fall_back(self.declaration, delivery.job.model, delivery.job.inputs)

    def _elapsed(self, delivery: Delivery) -> float:
        job = delivery.job
        assert job is not None
        return self._clock() - (job.started_at or job.created_at)

    def _past_deadline(self, delivery: Delivery) -> bool:
        return self._elapsed(delivery) > self.spec.deadline_s

    def _late(self, delivery: Delivery, reason: str) -> str:
        if not self._past_deadline(delivery):
            return reason
        return f"not done within gpu.deadline_s ({self.spec.deadline_s} s): {reason}"

    def _failed(self, error: GpuUnavailable) -> None:
        self._last_failure = str(error)
        self.breaker.failed()

    def _circuit_open(self) -> str:
        return (
            f"the GPU layer failed {self.spec.breaker_failures} calls in a row (last: "
            f"{self._last_failure}); not calling it for {self.spec.breaker_reset_s} s "
            "(circuit open)"
        )


def may_fall_back(declaration: Declaration, model: str, inputs: int) -> bool:
    routing = declaration.routing_for(model)
    return routing.gpu_fallback and inputs <= routing.job_max_inputs


def give_up(
    declaration: Declaration,
    delivery: Delivery,
    jobs: JobService,
    reason: str,
    *,
    fail: Callable[[Delivery, str, JobService], None],
) -> None:
    """Hand the job to the CPU worker where routing allows it, else fail it with why."""
    job = delivery.job
    assert job is not None
    routing = declaration.routing_for(job.model)
    if not routing.gpu_fallback:
        fail(delivery, f"{reason} (routing.{job.model}.gpu_fallback is off)", jobs)
        return
    if job.inputs > routing.job_max_inputs:
        fail(
            delivery,
            f"{reason}; too big to fall back to the CPU worker ({job.inputs} inputs, "
            f"routing.{job.model}.job_max_inputs = {routing.job_max_inputs})",
            jobs,
        )
        return
    if not jobs.store.fall_back(job.tenant, job.job_id, reason):
        delivery.done = True  # another delivery has moved the job on
        return
    logger.warning(
        "GPU job falls back to the CPU worker",
        extra={**delivery.log_keys, "reason": reason, **job_outcome_metrics("modal", "fallback")},
    )
    to_cpu(delivery, jobs)


def to_cpu(delivery: Delivery, jobs: JobService) -> None:
    """Queue a fallen-back job's CPU run: a plain job message, with a fresh count of
    deliveries. Until that is recorded, this delivery's claim stands: if the message
    cannot be sent or recorded, this delivery fails and comes back to do it (a second
    CPU message is harmless: a finished job is not run again)."""
    job, message = delivery.job, delivery.message
    assert job is not None and message is not None
    try:
        jobs.queue.send(replace(message, call_id=None, follow_up=None))
        jobs.store.handed_to_cpu(job.tenant, job.job_id)
    except Exception as error:
        delivery.fail(error)
        return
    delivery.done = True
