"""Job latency on the local stack: how long a job takes from the client's POST /v2/jobs to
its result, at a steady arrival rate.

`stratoserve dev` (its own state directory, a fixed dev key, --quiet) serves the jobs the
way a deployment does: the gateway hands POST /v2/jobs to the api function, which stores
the job (moto's DynamoDB) and queues it (moto's SQS); the local event source mapping
gathers up to jobs.batch_size messages, waiting up to jobs.batching_window_s after the
first, and invokes the worker; the worker claims, runs and stores each job.

--jobs jobs of 2 to 8 short sentences each (bench/sentences.py, fixed seed) are submitted
at --rate jobs per second (open loop: each at its scheduled time, whatever the answers
before it) by --threads client threads (httpx), which also poll each job's status_url
every --poll-interval seconds until it has succeeded. A warm-up burst before the measured
jobs starts every local execution environment (not counted).

Per job it records the 202's round trip (accepted latency) and, from the job's own
timestamps (`created_at`, `started_at`, `finished_at`, written by the functions on this
machine's clock), the latency from the client's send to `finished_at`, split into the
queue wait (created -> started: SQS, the batching window, the invocation) and the run
(started -> finished: the worker's batch, claims and result writes included). The latency
the client saw by polling is reported too; it adds up to one poll interval.

Traffic goes to 127.0.0.1 only; the stack is stopped with SIGINT at the end.

    python bench/job_latency.py [--jobs 200] [--rate 5] [--threads 4]
                                [--poll-interval 0.5] [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import heapq
import itertools
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    ROOT,
    DevStack,
    log_tail,
    machine,
    machine_busy_s,
    median,
    percentile,
    start_dev_stack,
    stop_process,
    tree_cpu_s,
    write_result,
)
from bench.sentences import texts_per_job

KEY = "local-dev-key-for-the-job-latency-benchmark"
MODEL, API_VERSION = "embed", "v2"
TEXTS_PER_JOB = (2, 8)
SEED = 20261128
REQUEST_TIMEOUT_S = 30.0
JOB_TIMEOUT_S = 120.0
WARMUP_JOBS = 20


@dataclass
class Job:
    index: int
    texts: list[str]
    due: float
    """When it is to be sent (perf_counter)."""
    sent_perf: float | None = None
    sent_at: float | None = None
    """When it was sent (epoch seconds, the clock the job's timestamps use)."""
    accepted_ms: float | None = None
    status_url: str | None = None
    polls: int = 0
    seen_perf: float | None = None
    """When a poll first saw it succeeded."""
    view: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def figures(self) -> dict[str, Any]:
        assert self.sent_at is not None and self.sent_perf is not None
        assert self.seen_perf is not None
        created, started, finished = (
            _epoch(self.view[name]) for name in ("created_at", "started_at", "finished_at")
        )
        return {
            "texts": len(self.texts),
            "accepted_ms": self.accepted_ms,
            "latency_s": finished - self.sent_at,
            "observed_s": self.seen_perf - self.sent_perf,
            "queue_wait_s": started - created,
            "run_s": finished - started,
            "attempts": self.view.get("attempts"),
            "polls": self.polls,
        }


def _epoch(timestamp: str) -> float:
    return dt.datetime.fromisoformat(timestamp).timestamp()


class Schedule:
    """What the client threads do next, earliest first: send a job, or poll one."""

    def __init__(self, jobs: list[Job]) -> None:
        self._order = itertools.count()
        self._heap: list[tuple[float, int, str, Job]] = [
            (job.due, next(self._order), "send", job) for job in jobs
        ]
        heapq.heapify(self._heap)
        self._open = len(jobs)
        self._changed = threading.Condition()

    def push(self, due: float, action: str, job: Job) -> None:
        with self._changed:
            heapq.heappush(self._heap, (due, next(self._order), action, job))
            self._changed.notify()

    def finish(self) -> None:
        with self._changed:
            self._open -= 1
            self._changed.notify_all()

    def next(self) -> tuple[str, Job] | None:
        """The next due action, once due; None when every job has finished."""
        with self._changed:
            while True:
                if not self._open:
                    return None
                if self._heap:
                    wait = self._heap[0][0] - time.perf_counter()
                    if wait <= 0:
                        _, _, action, job = heapq.heappop(self._heap)
                        return action, job
                    self._changed.wait(wait)
                else:
                    self._changed.wait()


def _client_thread(stack: DevStack, schedule: Schedule, poll_interval: float) -> None:
    headers = {"x-api-key": KEY}
    with httpx.Client(base_url=stack.url, headers=headers, timeout=REQUEST_TIMEOUT_S) as client:
        while (task := schedule.next()) is not None:
            action, job = task
            try:
                if action == "send":
                    _send(client, job)
                else:
                    _poll(client, job)
            except Exception as error:  # a thread that dies would leave the others waiting
                job.error = f"{action}: {type(error).__name__}: {error}"
            if job.error is not None or job.seen_perf is not None:
                schedule.finish()
            elif job.sent_perf is not None and time.perf_counter() - job.sent_perf > JOB_TIMEOUT_S:
                job.error = f"not succeeded after {JOB_TIMEOUT_S:.0f} s: {job.view.get('status')}"
                schedule.finish()
            else:
                schedule.push(time.perf_counter() + poll_interval, "poll", job)


def _send(client: httpx.Client, job: Job) -> None:
    job.sent_at, job.sent_perf = time.time(), time.perf_counter()
    response = client.post(f"/{API_VERSION}/jobs", json={"model": MODEL, "inputs": job.texts})
    job.accepted_ms = (time.perf_counter() - job.sent_perf) * 1000
    if response.status_code != 202:
        job.error = f"submit: {response.status_code} {response.text[:300]}"
        return
    job.status_url = response.json()["status_url"]


def _poll(client: httpx.Client, job: Job) -> None:
    assert job.status_url is not None
    response = client.get(job.status_url)
    job.polls += 1
    if response.status_code != 200:
        job.error = f"poll: {response.status_code} {response.text[:300]}"
        return
    view = response.json()
    status = view["status"]
    if status == "succeeded":
        job.seen_perf = time.perf_counter()
        outputs = view["result"]["outputs"]
        if len(outputs) != len(job.texts):
            job.error = f"{len(outputs)} outputs for {len(job.texts)} texts"
        view.pop("result")  # the figures need the timestamps, not 384 floats per text
    elif status in ("failed", "cancelled"):
        job.error = f"job {status}: {view.get('error')}"
    job.view = view


def run_jobs(
    stack: DevStack, texts: list[list[str]], rate: float, threads: int, poll_interval: float
) -> list[Job]:
    """Send the jobs at `rate` per second from `threads` threads and follow each to its end."""
    start = time.perf_counter() + 0.2
    jobs = [
        Job(index=index, texts=job_texts, due=start + index / rate)
        for index, job_texts in enumerate(texts)
    ]
    schedule = Schedule(jobs)
    workers = [
        threading.Thread(target=_client_thread, args=(stack, schedule, poll_interval), daemon=True)
        for _ in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    failed = [job for job in jobs if job.error is not None]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(jobs)} jobs failed, e.g. {failed[0].error}")
    return jobs


def _distribution(values: list[float], scale: float = 1.0) -> dict[str, float | None]:
    ordered = sorted(value * scale for value in values)
    return {
        "p50": percentile(ordered, 50),
        "p95": percentile(ordered, 95),
        "max": ordered[-1] if ordered else None,
        "mean": sum(ordered) / len(ordered) if ordered else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=200, help="jobs measured")
    parser.add_argument("--rate", type=float, default=5.0, help="jobs sent per second")
    parser.add_argument("--threads", type=int, default=4, help="client threads")
    parser.add_argument("--poll-interval", type=float, default=0.5, help="seconds between polls")
    parser.add_argument("--quick", action="store_true", help="30 jobs; nothing is recorded")
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.jobs = 30

    from stratoserve.declaration import load_declaration

    declared = load_declaration(ROOT / "stratoserve.toml").jobs
    texts = texts_per_job(SEED, WARMUP_JOBS + arguments.jobs, *TEXTS_PER_JOB)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="job-latency-") as temporary:
        state = Path(temporary)
        stack = start_dev_stack(state, KEY)
        try:
            # All at once: both worker environments and both api environments start.
            run_jobs(stack, texts[:WARMUP_JOBS], 1000.0, arguments.threads, 0.2)
            cpu, busy, wall = tree_cpu_s(stack.process.pid), machine_busy_s(), time.perf_counter()
            jobs = run_jobs(
                stack,
                texts[WARMUP_JOBS:],
                arguments.rate,
                arguments.threads,
                arguments.poll_interval,
            )
            seconds = time.perf_counter() - wall
            cpu_after, busy_after = tree_cpu_s(stack.process.pid), machine_busy_s()
        except BaseException:
            print(f"--- stratoserve dev log (tail) ---\n{log_tail(stack.log)}", file=sys.stderr)
            raise
        finally:
            exit_status = stop_process(stack.process)
        if exit_status != 0:
            print(f"stratoserve dev exited with {exit_status}:\n{log_tail(stack.log)}")
    wall_s = time.perf_counter() - began

    figures = [job.figures() for job in jobs]
    series = {
        name: [figure[name] for figure in figures]
        for name in ("latency_s", "observed_s", "queue_wait_s", "run_s", "accepted_ms")
    }
    lateness_ms = [((job.sent_perf or job.due) - job.due) * 1000 for job in jobs]
    summary: dict[str, Any] = {
        "latency_s": _distribution(series["latency_s"]),
        "observed_by_polling_s": _distribution(series["observed_s"]),
        "queue_wait_s": _distribution(series["queue_wait_s"]),
        "run_s": _distribution(series["run_s"]),
        "accepted_ms": _distribution(series["accepted_ms"]),
        "send_lateness_ms": _distribution(lateness_ms),
        "jobs_per_s": len(jobs) / seconds,
        "attempts_max": max(figure["attempts"] or 0 for figure in figures),
        "polls_per_job": median([figure["polls"] for figure in figures]),
        "stack_cpu_ms_per_job": (cpu_after - cpu) / len(jobs) * 1000
        if cpu is not None and cpu_after is not None
        else None,
        "machine_busy_cores": (busy_after - busy) / seconds
        if busy is not None and busy_after is not None
        else None,
        "stack_exit_status": exit_status,
    }
    window = float(declared.batching_window_s)
    latency = summary["latency_s"]
    p50, p95 = latency["p50"], latency["p95"]
    assert p50 is not None and p95 is not None
    result = {
        "command": "python bench/job_latency.py",
        "machine": machine(),
        "setup": {
            "model": "embed v2 (MiniLM-L6 int8, per-channel)",
            "stack": "stratoserve dev --quiet: gateway -> api function (2 environments) -> "
            "job store + queue in moto -> local event source mapping -> worker function "
            "(2 environments)",
            "jobs": arguments.jobs,
            "texts_per_job": f"{TEXTS_PER_JOB[0]}-{TEXTS_PER_JOB[1]} sentences "
            f"(bench/sentences.py, seed {SEED})",
            "texts": sum(len(job.texts) for job in jobs),
            "rate_per_s": arguments.rate,
            "threads": arguments.threads,
            "poll_interval_s": arguments.poll_interval,
            "warmup_jobs": WARMUP_JOBS,
            "batch_size": declared.batch_size,
            "batching_window_s": window,
            "latency": "client send (epoch) -> the job's finished_at (same machine clock)",
            "wall_s": round(wall_s, 1),
        },
        "summary": summary,
        "per_job": figures,
        "ratios": [
            {
                "name": f"job latency p50, submit -> succeeded (embed v2, {arguments.rate:g} "
                "jobs/s)",
                "framework": f"{p50:.2f} s p50, {p95:.2f} s p95 (stratoserve dev)",
                "baseline": f"{window:g} s (jobs.batching_window_s, the poller's wait for a batch)",
                "ratio": p50 / window if window else float("nan"),
                "target": None,
            }
        ],
    }
    print(_line("latency (send -> finished_at)", summary["latency_s"], "s"))
    print(_line("observed by polling", summary["observed_by_polling_s"], "s"))
    print(_line("queue wait (created -> started)", summary["queue_wait_s"], "s"))
    print(_line("run (started -> finished)", summary["run_s"], "s"))
    print(_line("accepted (202 round trip)", summary["accepted_ms"], "ms"))
    print(
        f"{summary['jobs_per_s']:.1f} jobs/s, stack CPU {summary['stack_cpu_ms_per_job']:.0f} ms "
        f"per job, machine busy {summary['machine_busy_cores']:.2f} cores, "
        f"send lateness p95 {summary['send_lateness_ms']['p95']:.0f} ms, "
        f"whole run {wall_s:.0f} s"
    )
    if arguments.quick:
        print("--quick: not recorded")
    else:
        path = write_result("job_latency", result)
        print(f"written to {path.relative_to(ROOT)}")


def _line(label: str, figures: dict[str, float | None], unit: str) -> str:
    shown = ", ".join(
        f"{name} {value:.3f} {unit}" if value is not None else f"{name} n/a"
        for name, value in figures.items()
    )
    return f"{label}: {shown}"


if __name__ == "__main__":
    main()
