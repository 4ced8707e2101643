"""GPU jobs in the worker, against moto: dispatch, following the call through delayed SQS
messages, the result brought home, and every way the GPU layer can let a job down
(unreachable, refusing, a call that errors, is lost or never finishes) ending in a CPU
fallback or a failure with the reason, never a job left running.

The GPU layer here is a scripted backend that computes real outputs with the CPU runner,
the real local-executor client pointed at a closed port, and the real Modal client with no
token (it refuses at once, without the network)."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pytest

from functions.runtime.environment import ExecutionEnvironment, Settings
from functions.runtime.gpu import (
    CallState,
    CallStatus,
    GpuUnavailable,
    LocalExecutorBackend,
    ModalBackend,
)
from functions.runtime.jobs import JobMessage, JobStatus
from functions.runtime.models import ModelKey
from functions.worker.batch import JobWorker
from tests.conftest import DECLARATION_FILE
from tests.integration.functions.worker.conftest import TENANT, receive

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from functions.runtime.gpu import GpuBackend
    from functions.runtime.job_service import JobService
    from functions.runtime.jobs import Job
    from stratoserve.declaration import Declaration
    from stratoserve.jobs import JobResources

TEXTS = [f"sentence number {index} about {'rivers ' * (index % 5)}and hills" for index in range(12)]


@dataclass
class ScriptedGpu:
    """A GPU layer whose calls answer as scripted; a finished call's outputs are the CPU
    runner's real vectors for its inputs."""

    run: Callable[[list[Any]], list[Any]]
    answers: list[str] = field(default_factory=list)
    """What each status question answers, in turn: pending, succeeded, failed, unknown."""
    spawned: list[list[Any]] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    name: str = "scripted GPU"

    def spawn(self, model: str, version: str, inputs: list[Any], correlation_id: str) -> str:
        self.spawned.append(inputs)
        return f"fc-{len(self.spawned)}"

    def status(self, call_id: str) -> CallStatus:
        answer = CallState(self.answers.pop(0))
        if answer == CallState.SUCCEEDED:
            outputs = self.run(self.spawned[int(call_id.removeprefix("fc-")) - 1])
            return CallStatus(answer, outputs=np.asarray(outputs).tolist())
        if answer == CallState.FAILED:
            return CallStatus(answer, error="RuntimeError: CUDA out of memory")
        return CallStatus(answer, error="no such call" if answer == CallState.UNKNOWN else None)

    def cancel(self, call_id: str) -> None:
        self.cancelled.append(call_id)


@pytest.fixture(scope="module")
def settings(resources: JobResources) -> Settings:
    return Settings(
        function="worker",
        jobs_table=resources.table,
        jobs_bucket=resources.bucket,
        jobs_queue_url=resources.queue_url,
    )


def _environment(declaration: Declaration, settings: Settings) -> ExecutionEnvironment:
    """The worker, its GPU follow-ups (and its re-dispatches while the circuit is open) a
    second apart, SQS's shortest delay, so tests wait little."""
    assert declaration.gpu is not None
    gpu = declaration.gpu.model_copy(update={"poll_interval_s": 1, "breaker_reset_s": 1})
    declaration = declaration.model_copy(update={"gpu": gpu})
    return ExecutionEnvironment(declaration, DECLARATION_FILE, "worker", settings=settings)


@pytest.fixture(scope="module")
def environment(
    declaration: Declaration, built_models: Path, settings: Settings
) -> ExecutionEnvironment:
    return _environment(declaration, settings)


@pytest.fixture(scope="module")
def strict_environment(
    declaration: Declaration, built_models: Path, settings: Settings
) -> ExecutionEnvironment:
    """The same declaration with routing.embed.gpu_fallback off: GPU trouble fails jobs."""
    routing = dict(declaration.routing)
    routing["embed"] = routing["embed"].model_copy(update={"gpu_fallback": False})
    return _environment(declaration.model_copy(update={"routing": routing}), settings)


def _cpu(environment: ExecutionEnvironment) -> Callable[[list[Any]], list[Any]]:
    def run(inputs: list[Any]) -> list[Any]:
        with environment.cache.use(ModelKey("embed", "1")) as loaded:
            return list(loaded.runner.run(loaded.runner.check(inputs)))

    return run


def _worker(
    environment: ExecutionEnvironment,
    service: JobService,
    backend: GpuBackend,
    *,
    clock: Callable[[], float] = time.time,
) -> JobWorker:
    return JobWorker(
        environment, jobs=lambda: service, gpu=lambda: backend, clock=clock, sleep=lambda _: None
    )


def _submit(service: JobService, inputs: list[Any] = TEXTS) -> str:
    submission = service.submit(
        tenant=TENANT,
        api_version="v1",
        model="embed",
        version="1",
        inputs=inputs,
        correlation_id="test-gpu",
        backend="modal",
    )
    return submission.job.job_id


def _job(service: JobService, job_id: str) -> Job:
    job = service.store.get(TENANT, job_id)
    assert job is not None
    return job


def _outputs(service: JobService, job: Job) -> np.ndarray:
    result = service.store.result(job)
    assert result is not None
    return np.asarray(orjson.loads(result)["outputs"])


def _step(
    worker: JobWorker, sqs: Any, resources: JobResources, *, with_receive_count: int = 1
) -> tuple[dict[str, str], JobMessage]:
    """Deliver the queue's next message to the worker (delayed ones included)."""
    (record,) = receive(sqs, resources, 1)
    record["attributes"]["ApproximateReceiveCount"] = str(with_receive_count)
    return worker.process([record]), JobMessage.decode(record["body"])


def _drop_delay(sqs: Any, resources: JobResources) -> None:
    """The follow-up message waits gpu.poll_interval_s (SQS DelaySeconds); take it now."""
    deadline = time.monotonic() + 15
    while not int(
        sqs.get_queue_attributes(
            QueueUrl=resources.queue_url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]["ApproximateNumberOfMessages"]
    ):
        assert time.monotonic() < deadline, "no follow-up message"
        time.sleep(0.2)


def test_a_gpu_job_is_dispatched_followed_and_its_result_stored(
    environment: ExecutionEnvironment, service: JobService, sqs: Any, resources: JobResources
) -> None:
    gpu = ScriptedGpu(_cpu(environment), answers=["pending", "succeeded"])
    worker = _worker(environment, service, gpu)
    job_id = _submit(service)

    failures, first = _step(worker, sqs, resources)
    dispatched = _job(service, job_id)
    _drop_delay(sqs, resources)
    _, follow_up = _step(worker, sqs, resources)
    _drop_delay(sqs, resources)
    _, second_follow_up = _step(worker, sqs, resources)
    finished = _job(service, job_id)

    assert failures == {}
    assert first.call_id is None
    assert (dispatched.status, dispatched.backend, dispatched.gpu_call_id) == (
        JobStatus.RUNNING,
        "modal",
        "fc-1",
    )
    assert dispatched.lease_until is None  # the follow-ups watch it now
    assert (follow_up.call_id, second_follow_up.call_id) == ("fc-1", "fc-1")
    assert gpu.spawned == [TEXTS]
    assert (finished.status, finished.backend, finished.fallback) == (
        JobStatus.SUCCEEDED,
        "modal",
        None,
    )
    expected = np.asarray(_cpu(environment)(TEXTS))
    assert np.allclose(_outputs(service, finished), expected, atol=1e-6)


def test_an_unreachable_gpu_layer_falls_back_to_the_cpu_worker_at_once(
    environment: ExecutionEnvironment, service: JobService, sqs: Any, resources: JobResources
) -> None:
    worker = _worker(environment, service, LocalExecutorBackend(_closed_port_url()))
    job_id = _submit(service)

    failures, _ = _step(worker, sqs, resources)
    handed_over = _job(service, job_id)
    cpu_failures, cpu_message = _step(worker, sqs, resources)  # the CPU run's own message
    job = _job(service, job_id)

    assert failures == cpu_failures == {}
    assert (handed_over.status, handed_over.backend, handed_over.attempts) == (
        JobStatus.RUNNING,
        "lambda",
        0,
    )
    assert (cpu_message.call_id, cpu_message.follow_up) == (None, None)
    assert (job.status, job.backend, job.attempts) == (JobStatus.SUCCEEDED, "lambda", 1)
    assert job.fallback is not None
    assert job.fallback.startswith("local GPU executor unreachable at http://127.0.0.1:")
    expected = np.asarray(_cpu(environment)(TEXTS))
    assert np.allclose(_outputs(service, job), expected, atol=1e-6)


def test_the_circuit_opens_after_repeated_failures_and_spares_the_layer(
    environment: ExecutionEnvironment, service: JobService, sqs: Any, resources: JobResources
) -> None:
    spec = environment.declaration.gpu
    assert spec is not None
    calls: list[str] = []

    class Down(ScriptedGpu):
        def spawn(self, model: str, version: str, inputs: list[Any], correlation_id: str) -> str:
            calls.append(model)
            raise GpuUnavailable("Modal spawn failed (ConnectionError): connection refused")

    worker = _worker(environment, service, Down(_cpu(environment)))
    job_ids = [_submit(service, [f"text {n}"]) for n in range(3)]

    failures = worker.process(receive(sqs, resources, 3))
    cpu_failures = worker.process(receive(sqs, resources, 3))
    jobs = [_job(service, job_id) for job_id in job_ids]

    assert failures == cpu_failures == {}
    # 3 tries for the first job, 2 for the second (the 5th failure opens the circuit),
    # none for the third.
    assert spec.dispatch_attempts == 3 and spec.breaker_failures == 5
    assert len(calls) == 5
    assert all((job.status, job.backend) == (JobStatus.SUCCEEDED, "lambda") for job in jobs)
    assert jobs[0].fallback is not None and "ConnectionError" in jobs[0].fallback
    assert jobs[2].fallback is not None and "circuit open" in jobs[2].fallback


def test_without_fallback_an_unreachable_layer_is_tried_until_the_deadline_then_fails(
    strict_environment: ExecutionEnvironment,
    service: JobService,
    sqs: Any,
    resources: JobResources,
) -> None:
    spec = strict_environment.declaration.gpu
    assert spec is not None
    now = [time.time()]
    backend = LocalExecutorBackend(_closed_port_url())
    worker = _worker(strict_environment, service, backend, clock=lambda: now[0])
    job_id = _submit(service)

    failures, _ = _step(worker, sqs, resources)
    waiting = _job(service, job_id)
    _drop_delay(sqs, resources)  # dispatched again once the circuit may close
    now[0] += spec.deadline_s + 1
    late_failures, _ = _step(worker, sqs, resources)
    failed = _job(service, job_id)

    assert failures == late_failures == {}
    assert waiting.status == JobStatus.RUNNING
    assert "unreachable" in (waiting.error or "")
    assert failed.status == JobStatus.FAILED
    assert failed.error is not None
    assert failed.error.startswith(f"not done within gpu.deadline_s ({spec.deadline_s} s): ")
    assert "local GPU executor unreachable" in failed.error
    assert failed.error.endswith("(routing.embed.gpu_fallback is off)")


def test_modal_without_a_token_refuses_and_the_job_fails_with_why(
    strict_environment: ExecutionEnvironment,
    service: JobService,
    sqs: Any,
    resources: JobResources,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    for name in ("MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET", "MODAL_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MODAL_CONFIG_PATH", str(tmp_path / "modal.toml"))
    worker = _worker(strict_environment, service, ModalBackend("stratoserve-gpu"))
    job_id = _submit(service)

    started = time.monotonic()
    failures, _ = _step(worker, sqs, resources)
    job = _job(service, job_id)

    assert time.monotonic() - started < 10  # refused at once: no retry, no network wait
    assert failures == {}
    assert job.status == JobStatus.FAILED
    assert job.error is not None
    assert job.error.startswith("Modal refused the spawn (AuthError): Token missing")
    assert job.error.endswith("(routing.embed.gpu_fallback is off)")


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("failed", "the GPU call failed: RuntimeError: CUDA out of memory"),
        ("unknown", "the GPU layer has no call fc-1 (no such call)"),
    ],
)
def test_a_call_that_errors_or_is_lost_falls_back_or_fails(
    answer: str,
    reason: str,
    environment: ExecutionEnvironment,
    strict_environment: ExecutionEnvironment,
    service: JobService,
    sqs: Any,
    resources: JobResources,
) -> None:
    outcomes = []
    for env in (environment, strict_environment):
        worker = _worker(env, service, ScriptedGpu(_cpu(environment), answers=[answer]))
        job_id = _submit(service, [*TEXTS, f"{env is environment}"])
        _step(worker, sqs, resources)
        _drop_delay(sqs, resources)
        failures, _ = _step(worker, sqs, resources)
        if env is environment:
            _step(worker, sqs, resources)  # the CPU run
        assert failures == {}
        outcomes.append(_job(service, job_id))

    fell_back, failed = outcomes
    assert (fell_back.status, fell_back.backend, fell_back.fallback) == (
        JobStatus.SUCCEEDED,
        "lambda",
        reason,
    )
    expected = np.asarray(_cpu(environment)([*TEXTS, "True"]))
    assert np.allclose(_outputs(service, fell_back), expected, atol=1e-6)
    assert (failed.status, failed.error) == (
        JobStatus.FAILED,
        f"{reason} (routing.embed.gpu_fallback is off)",
    )


def test_a_call_that_never_finishes_is_cancelled_at_the_deadline(
    environment: ExecutionEnvironment, service: JobService, sqs: Any, resources: JobResources
) -> None:
    spec = environment.declaration.gpu
    assert spec is not None
    now = [time.time()]
    gpu = ScriptedGpu(_cpu(environment), answers=["pending", "pending"])
    worker = _worker(environment, service, gpu, clock=lambda: now[0])
    job_id = _submit(service)

    _step(worker, sqs, resources)
    _drop_delay(sqs, resources)
    _step(worker, sqs, resources)  # still within the deadline: asks again later
    now[0] += spec.deadline_s + 1
    _drop_delay(sqs, resources)
    failures, _ = _step(worker, sqs, resources)
    _step(worker, sqs, resources)  # the CPU run
    job = _job(service, job_id)

    assert failures == {}
    assert gpu.cancelled == ["fc-1"]
    assert (job.status, job.backend) == (JobStatus.SUCCEEDED, "lambda")
    assert job.fallback == (
        f"the GPU call did not finish within gpu.deadline_s ({spec.deadline_s} s); cancelled"
    )


def test_a_duplicate_dispatch_message_never_forks_the_following(
    environment: ExecutionEnvironment, service: JobService, sqs: Any, resources: JobResources
) -> None:
    gpu = ScriptedGpu(_cpu(environment), answers=["pending", "succeeded"])
    worker = _worker(environment, service, gpu)
    job_id = _submit(service)
    (dispatch,) = receive(sqs, resources, 1)

    worker.process([dispatch])
    worker.process([dispatch])  # SQS delivers it again: it follows the call, not spawn another
    _drop_delay(sqs, resources)
    follow_ups = receive(sqs, resources, 2)
    tokens = [JobMessage.decode(record["body"]).follow_up for record in follow_ups]
    failures = worker.process(follow_ups)  # the superseded one is dropped, unasked
    job = _job(service, job_id)

    assert failures == {}
    assert len(gpu.spawned) == 1
    assert len(set(tokens)) == 2
    assert gpu.answers == []  # asked twice in all: "pending" once, "succeeded" once
    assert (job.status, job.backend) == (JobStatus.SUCCEEDED, "modal")


def test_a_gpu_job_with_large_inputs_takes_them_from_s3(
    environment: ExecutionEnvironment, service: JobService, sqs: Any, resources: JobResources
) -> None:
    texts = [f"{index} " + "a long sentence about rivers and hills " * 500 for index in range(12)]
    gpu = ScriptedGpu(_cpu(environment), answers=["succeeded"])
    worker = _worker(environment, service, gpu)
    job_id = _submit(service, texts)

    _, message = _step(worker, sqs, resources)
    _drop_delay(sqs, resources)
    _, follow_up = _step(worker, sqs, resources)

    assert message.inputs is None and message.inputs_key is not None
    assert follow_up.inputs_key == message.inputs_key
    assert gpu.spawned == [texts]
    assert _job(service, job_id).status == JobStatus.SUCCEEDED


def test_a_follow_up_for_a_job_that_moved_on_is_dropped(
    environment: ExecutionEnvironment, service: JobService, sqs: Any, resources: JobResources
) -> None:
    gpu = ScriptedGpu(_cpu(environment), answers=["succeeded"])
    worker = _worker(environment, service, gpu)
    job_id = _submit(service)
    _step(worker, sqs, resources)
    _drop_delay(sqs, resources)
    (record,) = receive(sqs, resources, 1)
    worker.process([record])  # the job succeeds
    finished = _job(service, job_id)

    failures = worker.process([record])  # a duplicate of the follow-up

    assert failures == {}
    assert _job(service, job_id) == finished
    assert gpu.answers == []  # not asked again


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_a_follow_up_killed_on_its_last_delivery_settles_the_job_as_abandoned(
    environment: ExecutionEnvironment, service: JobService, sqs: Any, resources: JobResources
) -> None:
    spec = environment.declaration.jobs
    gpu = ScriptedGpu(_cpu(environment), answers=[])
    worker = _worker(environment, service, gpu)
    job_id = _submit(service)
    _step(worker, sqs, resources)
    token = _job(service, job_id).follow_up
    assert token is not None

    # Its last delivery claims the job, falls back, and dies before the CPU run is queued.
    claimed = service.store.claim_follow_up(
        TENANT, job_id, token, delivery=spec.max_receive_count, lease_s=0.05
    )
    service.store.fall_back(TENANT, job_id, "the GPU call failed: RuntimeError: boom")
    time.sleep(0.1)
    settled = _job(service, job_id)

    assert claimed is not None and claimed.attempts == spec.max_receive_count
    assert settled.status == JobStatus.FAILED
    assert (settled.error or "").startswith(
        f"no attempt finished: {spec.max_receive_count} deliveries, the last one abandoned"
    )


def test_a_leftover_follow_up_failing_for_good_does_not_fail_the_job(
    environment: ExecutionEnvironment, service: JobService, sqs: Any, resources: JobResources
) -> None:
    gpu = ScriptedGpu(_cpu(environment), answers=["pending"])
    worker = _worker(environment, service, gpu)
    job_id = _submit(service)
    _step(worker, sqs, resources)
    _drop_delay(sqs, resources)
    (first,) = receive(sqs, resources, 1)
    worker.process([first])  # hands the following on to a newer message

    last = {**first, "attributes": {**first["attributes"], "ApproximateReceiveCount": "5"}}
    stale = JobMessage.decode(first["body"])
    # What the worker does after a follow-up's last delivery failed: fail the job, but only
    # while that message still follows it.
    failed = service.store.fail(
        TENANT, job_id, "gave up after 5 deliveries: boom", follow_up=stale.follow_up
    )
    failures = worker.process([last])  # and its delivery is dropped as a leftover
    job = _job(service, job_id)

    assert failed is False
    assert failures == {}
    assert (job.status, job.gpu_call_id) == (JobStatus.RUNNING, "fc-1")
