"""Faults over a 1,000-job run on `stratoserve dev` (127.0.0.1 only): the worker's
execution environments SIGKILLed every few seconds, the local AWS (moto) restarted twice
(once while jobs are being submitted, once while they run), and the GPU executor failing
half of its calls. Every job must end succeeded, or failed with a reason; none lost (each
accepted job id found finished; a submit answered 5xx is retried with the same
Idempotency-Key and ends as one job), none duplicated (one job per key, each result stored
once, each GPU job dispatched once); results equal the inline path's.

Jobs: digits rows and short sentences on the CPU worker; embed and `strict` jobs of
GPU_MIN_INPUTS texts on the GPU executor. A failed GPU call sends an embed job back to the
CPU worker (gpu_fallback) and fails a strict job with the reason.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pytest

from functions.runtime.jobs import JobStatus
from stratoserve.client import Client, ServerError
from stratoserve.declaration import load_declaration
from stratoserve.jobs import JobAdmin, JobResources
from stratoserve.local.aws import client as aws_client
from tests.integration.stratoserve.local.dev_stack import KEY, Stack, start_stack, stop_stack
from tests.soak.chaos import (
    GPU_MIN_INPUTS,
    Outage,
    StackLog,
    WorkerKiller,
    bearer,
    fault_declaration,
    faults_state,
    restart_aws,
    stack_record,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from functions.runtime.jobs import Job

pytestmark = pytest.mark.soak

JOBS = {"digits": 450, "embed-cpu": 250, "embed-gpu": 180, "strict": 120}
SUBMITTERS = 4
KILL_EVERY_S = 5.0
KILLS_AFTER_SUBMIT_S = 20.0
"""The killing goes on this long after the last submit, then stops."""
POLL_S = 5.0
OUTAGE_S = 3.0
FIRST_OUTAGE_AT = 400
"""Submitted jobs before the first restart of the local AWS (the second follows the
last submit)."""
SUBMIT_GIVE_UP_S = 90.0
"""How long one job's submit is retried (5xx, a dropped connection) before the test fails."""
DRAIN_S = 240.0
"""How long the jobs may take to finish once all are submitted (a batch lost with a
killed worker returns after the visibility timeout; a job may need five deliveries)."""
SAMPLE = 60
NO_GPU = "GPU call failed, no fallback"
DEAD_LETTERED = "out of deliveries, in the dead-letter queue"

SUBJECTS = ("a child", "the old man", "my neighbour's dog", "a woman in a hurry")
VERBS = ("watches", "paints", "forgets", "carries", "reads about")
THINGS = ("the boat", "a small red kite", "fresh bread", "the long winding road", "a book")


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(words) for words in (SUBJECTS, VERBS, THINGS)) + f" {rng.random()}"


def _digits_row(rng: random.Random) -> list[int]:
    return [rng.randrange(17) for _ in range(64)]


@dataclass(frozen=True)
class Planned:
    key: str
    """Its Idempotency-Key."""
    kind: str
    model: str
    inputs: list[Any]


def _plan(seed: int = 1000) -> list[Planned]:
    rng = random.Random(seed)
    planned = []
    for kind, count in JOBS.items():
        for index in range(count):
            if kind == "digits":
                model, inputs = "digits", [_digits_row(rng) for _ in range(rng.randrange(1, 4))]
            elif kind == "embed-cpu":
                size = rng.randrange(1, GPU_MIN_INPUTS)
                model, inputs = "embed", [_sentence(rng) for _ in range(size)]
            else:
                model = "strict" if kind == "strict" else "embed"
                inputs = [_sentence(rng) for _ in range(GPU_MIN_INPUTS)]
            planned.append(Planned(f"soak-{kind}-{index}-{seed}", kind, model, inputs))
    rng.shuffle(planned)
    return planned


@dataclass
class Accepted:
    planned: Planned
    job_ids: set[str] = field(default_factory=set)
    """Every job id the API answered for this key (one, or a duplicate was made)."""
    refusals: list[str] = field(default_factory=list)
    """The 5xx answers and dropped connections before it was accepted."""

    @property
    def job_id(self) -> str:
        (job_id,) = self.job_ids
        return job_id


@dataclass
class Run:
    accepted: list[Accepted]
    finished: dict[str, Job]
    outages: list[Outage]
    kills: int
    log: StackLog
    submit_s: float
    drain_s: float

    def by_kind(self, kind: str) -> list[Job]:
        return [self.finished[a.job_id] for a in self.accepted if a.planned.kind == kind]


@pytest.fixture(scope="module")
def stack(built_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state = tmp_path_factory.mktemp("faults-state")
    running = start_stack(state, fault_declaration(state))
    yield running
    stop_stack(running)


@pytest.fixture(scope="module")
def admin(stack: Stack) -> JobAdmin:
    record = stack_record(stack)
    assert stack.config is not None
    return JobAdmin.connect(
        load_declaration(stack.config),
        JobResources(**record["jobs"]),
        lambda service: aws_client(service, record["aws_url"], record["token"]),
    )


def _submit(client: Client, planned: Planned) -> Accepted:
    """Submit until the API accepts; a 5xx or a dropped connection is retried with the
    same Idempotency-Key, as a client should."""
    accepted = Accepted(planned)
    deadline = time.monotonic() + SUBMIT_GIVE_UP_S
    while True:
        try:
            job = client.submit(planned.model, planned.inputs, idempotency_key=planned.key)
        except ServerError as error:
            accepted.refusals.append(f"{error.status}: {error.message}")
        except httpx.TransportError as error:
            accepted.refusals.append(f"{type(error).__name__}: {error}")
        else:
            accepted.job_ids.add(job.job_id)
            return accepted
        assert time.monotonic() < deadline, f"{planned.key} never accepted: {accepted.refusals}"
        time.sleep(0.5)


def _wait(admin: JobAdmin, job_ids: set[str], timeout_s: float) -> dict[str, Job]:
    """The tenant's jobs, once all of `job_ids` have finished; fails past `timeout_s` with
    the stragglers' states and what the queues hold. One query of the tenant's jobs every
    few seconds: it goes through moto, which serves the stack too."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            jobs = {job.job_id: job for job in admin.jobs("dev")}
        except Exception:  # the local AWS restarting (or moto's threads racing): ask again
            jobs = {}
        if all(job_id in jobs and jobs[job_id].finished for job_id in job_ids):
            return jobs
        if time.monotonic() > deadline:
            waiting = Counter(str(jobs[i].status) if i in jobs else "missing" for i in job_ids)
            pytest.fail(
                f"unfinished after {timeout_s} s: {dict(waiting)}; queues: {_depths(admin)}"
            )
        time.sleep(POLL_S)


def _depths(admin: JobAdmin) -> dict[str, dict[str, str]]:
    """The jobs queue's and the DLQ's messages: visible, in flight, delayed."""
    depths = {}
    for name, url in (
        ("jobs", admin.resources.queue_url),
        ("dead letters", admin.resources.dead_letter_queue_url),
    ):
        depths[name] = admin._sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
    return depths


@pytest.fixture(scope="module")
def run(stack: Stack, admin: JobAdmin) -> Run:
    record = stack_record(stack)
    answer = httpx.put(
        f"{record['gpu_executor']['url']}/faults",
        json={"error": 0.5},
        headers=bearer(record),
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    planned = _plan()
    outages: list[Outage] = []
    submitted = threading.Semaphore(0)

    def first_outage() -> None:
        for _ in range(FIRST_OUTAGE_AT):
            submitted.acquire()
        outages.append(restart_aws(stack, OUTAGE_S))

    local = threading.local()
    clients: list[Client] = []

    def submit(one: Planned) -> Accepted:
        if not hasattr(local, "client"):
            # Its own retries off: _submit retries, and records every refusal it meets.
            local.client = Client(stack.url, KEY, api_version="v2", timeout_s=60, max_retries=0)
            clients.append(local.client)
        accepted = _submit(local.client, one)
        submitted.release()
        return accepted

    killer = WorkerKiller(stack, every_s=KILL_EVERY_S)
    started = time.monotonic()
    killer.start()
    try:
        outage = threading.Thread(target=first_outage, daemon=True)
        outage.start()
        with ThreadPoolExecutor(SUBMITTERS) as pool:
            accepted = list(pool.map(submit, planned))
        outage.join(timeout=60)
        submit_s = time.monotonic() - started
        drain_started = time.monotonic()
        outages.append(restart_aws(stack, OUTAGE_S))
        job_ids = {job_id for one in accepted for job_id in one.job_ids}
        # Kill on while the jobs run, for a while; then let the stragglers through.
        time.sleep(KILLS_AFTER_SUBMIT_S)
    finally:
        killer.stop()
        for client in clients:
            client.close()
    finished = _wait(admin, job_ids, DRAIN_S)
    result = Run(
        accepted=accepted,
        finished=finished,
        outages=outages,
        kills=len(killer.killed),
        log=StackLog.read(stack.log),
        submit_s=submit_s,
        drain_s=time.monotonic() - drain_started,
    )
    print(_figures(result))
    return result


def _figures(run: Run) -> str:
    """What happened, for the record (`pytest -s` shows it)."""
    jobs = list(run.finished.values())
    failed = Counter(_reason(job.error or "") for job in jobs if job.status == JobStatus.FAILED)
    refused = Counter(refusal.split(":")[0] for one in run.accepted for refusal in one.refusals)
    injected = sum("InjectedFault" in (job.fallback or job.error or "") for job in jobs)
    return "\n".join(
        [
            f"jobs: {len(jobs)} ({dict(Counter(job.status for job in jobs))}), "
            f"submitted in {run.submit_s:.0f} s, drained in {run.drain_s:.0f} s",
            f"worker environments killed: {run.kills}; attempts: "
            f"{dict(sorted(Counter(job.attempts for job in jobs).items()))}",
            "AWS outages: "
            + "; ".join(
                f"{o.down_s:g} s asked, {o.unreachable_s:.1f} s unreachable ({o.refused[:60]})"
                for o in run.outages
            ),
            f"submits retried: {sum(bool(one.refusals) for one in run.accepted)} ({dict(refused)})",
            f"GPU calls failed on purpose, seen in jobs: {injected}; "
            f"fell back: {sum(bool(job.fallback) for job in jobs)}",
            f"failed: {dict(failed)}",
            f"torn log lines: {run.log.torn}",
        ]
    )


def _reason(error: str) -> str:
    if error.endswith("(routing.strict.gpu_fallback is off)"):
        return NO_GPU
    if "the message is in the dead-letter queue" in error:
        return DEAD_LETTERED
    return error[:100] or "(no reason)"


def test_every_job_ends_succeeded_or_failed_with_a_reason(run: Run) -> None:
    statuses = Counter(job.status for job in run.finished.values())
    reasons = Counter(
        _reason(job.error or "") for job in run.finished.values() if job.status == "failed"
    )
    gpu_failures = [job for job in run.finished.values() if _reason(job.error or "") == NO_GPU]

    assert set(statuses) <= {JobStatus.SUCCEEDED, JobStatus.FAILED}, statuses
    # A reason each, and one that the faults explain: a failed GPU call with no fallback,
    # or (kills on kills) a job out of deliveries, in the dead-letter queue.
    assert set(reasons) <= {NO_GPU, DEAD_LETTERED}, reasons
    assert all(job.model == "strict" for job in gpu_failures)
    assert reasons[DEAD_LETTERED] <= 0.05 * len(run.accepted), reasons


def test_a_submit_refused_in_the_outage_was_a_clear_503_and_its_retry_one_job(run: Run) -> None:
    refused = [one for one in run.accepted if one.refusals]
    answers = {refusal for one in refused for refusal in one.refusals}

    assert refused, "the outage met no submit"
    assert all(len(one.job_ids) == 1 for one in refused)
    assert all(answer.startswith("503: ") and answer.endswith("; try again") for answer in answers)
    assert not any("Traceback" in answer for answer in answers)


def test_none_is_lost_and_none_duplicated(run: Run) -> None:
    job_ids = [one.job_id for one in run.accepted]  # one id per key, or it raises

    assert len(set(job_ids)) == len(run.accepted) == sum(JOBS.values())
    # Each accepted job is in the store, and the store holds no other (no duplicate job).
    assert set(run.finished) == set(job_ids)
    stored = Counter(record["job_id"] for record in run.log.messages("job succeeded"))
    assert max(stored.values()) == 1, "a job's result was stored twice"
    dispatched = Counter(
        record["job_id"] for record in run.log.messages("job dispatched to the GPU")
    )
    assert max(dispatched.values()) == 1, "a GPU job was dispatched twice"
    assert set(stored) <= set(job_ids)


def test_gpu_failures_fall_back_or_fail_with_the_reason(run: Run) -> None:
    embed_gpu, strict = run.by_kind("embed-gpu"), run.by_kind("strict")

    assert all(
        job.status == JobStatus.SUCCEEDED or _reason(job.error or "") == DEAD_LETTERED
        for job in embed_gpu
    )
    fell_back = [job for job in embed_gpu if job.fallback]
    assert fell_back and all(job.backend == "lambda" for job in fell_back)
    assert any("InjectedFault" in (job.fallback or "") for job in fell_back)
    assert any(job.backend == "modal" and not job.fallback for job in embed_gpu)
    strict_failed = [job for job in strict if job.status == JobStatus.FAILED]
    assert strict_failed, "half the GPU calls fail: some strict job must have failed"
    assert all(_reason(job.error or "") in (NO_GPU, DEAD_LETTERED) for job in strict_failed)
    assert any(_reason(job.error or "") == NO_GPU for job in strict_failed)
    assert any("InjectedFault" in (job.error or "") for job in strict_failed)
    assert all(job.backend == "modal" for job in strict if job.status == JobStatus.SUCCEEDED)


def test_a_replay_of_a_key_is_its_job_and_adds_none(
    stack: Stack, admin: JobAdmin, run: Run
) -> None:
    sample = random.Random(6).sample(run.accepted, SAMPLE)

    with Client(stack.url, KEY, api_version="v2", timeout_s=60) as client:
        replayed = [
            client.submit(one.planned.model, one.planned.inputs, idempotency_key=one.planned.key)
            for one in sample
        ]

    assert [job.job_id for job in replayed] == [one.job_id for one in sample]
    assert all(job.status in ("succeeded", "failed") for job in replayed)
    assert len(admin.jobs("dev")) == len(run.accepted)


def test_the_results_are_the_inline_ones(stack: Stack, run: Run) -> None:
    rng = random.Random(5)
    succeeded = [
        one for one in run.accepted if run.finished[one.job_id].status == JobStatus.SUCCEEDED
    ]
    sample = rng.sample(succeeded, min(SAMPLE, len(succeeded)))
    with Client(stack.url, KEY, api_version="v2", timeout_s=60) as client:
        worst = 1.0
        for one in sample:
            outputs = client.job(one.job_id).wait(timeout_s=30, progress=False).outputs
            expected = client.predict(one.planned.model, one.planned.inputs).outputs
            assert len(outputs) == len(one.planned.inputs)
            if one.planned.model == "digits":
                assert [o["label"] for o in outputs] == [o["label"] for o in expected]
            else:
                got, want = np.asarray(outputs), np.asarray(expected)
                cosines = np.sum(got * want, axis=1) / (
                    np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1)
                )
                worst = min(worst, float(cosines.min()))
    assert worst >= 0.999


def test_the_faults_happened(stack: Stack, run: Run) -> None:
    kinds = Counter(one.planned.kind for one in run.accepted)
    attempts = Counter(job.attempts for job in run.finished.values())
    lost_batches = [
        line
        for line in run.log.text
        if "worker invocation failed" in line and "init failed" not in line
    ]

    assert run.kills >= 5
    assert len(run.outages) == 2, "a restart of the local AWS failed"
    assert lost_batches, "no kill interrupted a batch"
    assert max(attempts) >= 2
    assert all(outage.refused for outage in run.outages), run.outages
    assert faults_state(stack)["aws"] == {
        "up": True,
        "restarts": len(run.outages),
        "endpoint_url": stack_record(stack)["aws_url"],
    }
    assert kinds == Counter(JOBS)
