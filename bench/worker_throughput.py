"""Worker throughput: jobs per second through the job worker with embed v2 (MiniLM-L6 int8),
batched (JobWorker(batched=True): the batch's texts go to the model together, in
length-sorted chunks) against one model call per record (batched=False), side by side.

Each record is a job of 1 to 4 short sentences (bench/sentences.py, fixed seed); a batch
holds the declaration's jobs.batch_size records, as the SQS event source hands the worker.
Two stages are measured in rounds that rotate which series goes first; the figures are
medians over the rounds:

(a) compute: the worker's own run path for a model's share of a batch (JobWorker._run:
    the jobs together in length-sorted chunks, or each alone; each result serialised and
    logged as it is finished) on prepared deliveries, with the model loaded as the worker
    loads it and a job store that keeps nothing. No AWS call: what batching changes, alone.
(b) end to end: JobWorker.process over real SQS records, against moto started in this
    process (LocalAws + create_job_resources): jobs submitted with JobService.submit,
    received from the queue as the event source mapping does, each batch processed
    (claim, run, store the result) with real boto3 calls. Only process() is timed.

Every session run is timed as well (the runner's session is wrapped), so the result also
says where the time goes: session runs, real and padded tokens, and a least-squares fit of
a run's time as a fixed cost plus a cost per padded token.

When the loaded runner runs one text per session run (Embedder.one_text_per_run, on for
models that quantize activations dynamically, so that a text's vector never depends on
its batch), batching cannot share a session run between texts. Stage (a) then also runs
both paths with the flag off: what batching would gain if texts shared session runs.

The session options are the declaration's (one intra-op thread, as on a 1-vCPU Lambda).
The worker's log lines are written, to /dev/null.

    python bench/worker_throughput.py [--rounds 5] [--batches 20] [--end-to-end-batches 10]
                                      [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, machine, machine_busy_s, median, write_result
from bench.sentences import texts_per_job

if TYPE_CHECKING:
    from collections.abc import Callable

    from functions.runtime.environment import ExecutionEnvironment
    from functions.runtime.job_service import JobService
    from functions.worker.batch import JobWorker
    from stratoserve.jobs import JobResources

CONFIG = ROOT / "stratoserve.toml"
MODEL, VERSION, API_VERSION = "embed", "2", "v2"
TENANT = "bench"
TARGET = 3.0
SEED = 20261127
TEXTS_PER_JOB = (1, 4)
MODES = ("batched", "per_record")
SHARED = "_shared_runs"
"""Suffix of the stage (a) series run with one_text_per_run off."""

SessionRun = tuple[int, int, int, float]
"""texts, padded tokens, real tokens, seconds"""


class TimedRunner:
    """The loaded model's runner (tokenize, session runs, outputs), timed."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self.seconds = 0.0

    def check(self, inputs: list[Any]) -> Any:
        return self.runner.check(inputs)

    def run(self, checked: list[str]) -> Any:
        started = time.perf_counter()
        try:
            return self.runner.run(checked)
        finally:
            self.seconds += time.perf_counter() - started


class TimedSession:
    """The runner's ONNX Runtime session, recording each run: texts, padded and real
    tokens (from the feeds the runner built), seconds."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.runs: list[SessionRun] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)

    def run(self, output_names: Any, feeds: dict[str, Any], *rest: Any) -> Any:
        started = time.perf_counter()
        outputs = self.session.run(output_names, feeds, *rest)
        seconds = time.perf_counter() - started
        ids, mask = feeds["input_ids"], feeds["attention_mask"]
        self.runs.append((int(ids.shape[0]), int(ids.size), int(mask.sum()), seconds))
        return outputs


@dataclass
class Model:
    """The loaded embed model as the worker sees it, with the benchmark's timers in it."""

    runner: TimedRunner
    session: TimedSession
    embedder: Any

    @property
    def one_text_per_run(self) -> bool:
        return bool(getattr(self.embedder, "one_text_per_run", False))

    @contextlib.contextmanager
    def texts_sharing_runs(self, shared: bool) -> Any:
        declared = self.one_text_per_run
        if shared:
            self.embedder.one_text_per_run = False
        try:
            yield
        finally:
            if hasattr(self.embedder, "one_text_per_run"):
                self.embedder.one_text_per_run = declared


# --- (a) the compute stage --------------------------------------------------------------


class DiscardingStore:
    """Stands in for the job store in stage (a): takes every result, keeps none."""

    def succeed(self, job: Any, result: bytes) -> bool:
        return True

    def fail(self, tenant: str, job_id: str, reason: str, *, follow_up: str | None = None) -> bool:
        return True


class DiscardingJobs:
    """The JobService that JobWorker._run finishes jobs through, without AWS."""

    def __init__(self) -> None:
        self.store = DiscardingStore()


def _running_job(index: int, texts: list[str]) -> Any:
    from functions.runtime.jobs import Job, JobStatus

    return Job(
        tenant=TENANT,
        job_id=f"compute-{index}",
        status=JobStatus.RUNNING,
        model=MODEL,
        version=VERSION,
        api_version=API_VERSION,
        inputs=len(texts),
        correlation_id=f"compute-{index}",
        created_at=0.0,
        updated_at=0.0,
        expires_at=0,
        request_hash="-",
    )


def compute_stage(
    worker: JobWorker, model: Model, batches: list[list[list[str]]], *, shared: bool
) -> tuple[float, list[Any]]:
    """Seconds the worker's run path takes over the batches, and the outputs per record."""
    from functions.runtime.models import ModelKey
    from functions.worker.batch import Delivery

    jobs: Any = DiscardingJobs()
    seconds = 0.0
    outputs: list[Any] = []
    with model.texts_sharing_runs(shared):
        for batch in batches:
            deliveries = [
                Delivery(
                    message_id=str(index),
                    receipt_handle="-",
                    receive_count=1,
                    job=_running_job(index, texts),
                    inputs=texts,
                )
                for index, texts in enumerate(batch)
            ]
            started = time.perf_counter()
            worker._run(ModelKey(MODEL, VERSION), deliveries, jobs, None)
            seconds += time.perf_counter() - started
            for delivery in deliveries:
                if delivery.failure is not None or delivery.outputs is None:
                    raise RuntimeError(f"record {delivery.message_id} failed: {delivery.failure}")
                outputs.append(delivery.outputs)
    return seconds, outputs


def _min_cosine(left: list[Any], right: list[Any]) -> float:
    """The least cosine between the two series' vectors of the same text."""
    import numpy as np

    first = np.concatenate([np.asarray(outputs) for outputs in left])
    second = np.concatenate([np.asarray(outputs) for outputs in right])
    cosines = (first * second).sum(axis=1) / (
        np.linalg.norm(first, axis=1) * np.linalg.norm(second, axis=1)
    )
    return float(cosines.min())


# --- (b) end to end -----------------------------------------------------------------------


def _receive_batch(sqs: Any, resources: JobResources, size: int) -> list[dict[str, Any]]:
    """Up to `size` messages as Lambda's SQS event records, as the event source mapping
    gathers a batch."""
    from stratoserve.local.aws import REGION
    from stratoserve.local.poller import sqs_record

    messages: list[dict[str, Any]] = []
    while len(messages) < size:
        answer = sqs.receive_message(
            QueueUrl=resources.queue_url,
            MaxNumberOfMessages=min(10, size - len(messages)),
            WaitTimeSeconds=0,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        received = answer.get("Messages", [])
        if not received:
            break
        messages.extend(received)
    return [sqs_record(message, resources.queue_arn, REGION) for message in messages]


def _aws_call_counter(environment: ExecutionEnvironment) -> Callable[[], int]:
    """How many AWS calls the environment's clients have made so far."""
    calls = [0]

    def count(**_: Any) -> None:
        calls[0] += 1

    for client in (environment.aws.dynamodb, environment.aws.s3, environment.aws.sqs):
        client.meta.events.register("before-call", count)
    return lambda: calls[0]


def end_to_end(
    worker: JobWorker,
    service: JobService,
    sqs: Any,
    resources: JobResources,
    jobs: list[list[str]],
    batch_size: int,
    aws_calls: Callable[[], int],
    *,
    check: bool,
) -> dict[str, float]:
    """Submit the jobs, then hand them to the worker a batch at a time: seconds in
    process(), AWS calls made in process(), and the submission's seconds."""
    import orjson

    started = time.perf_counter()
    submitted = [
        service.submit(
            tenant=TENANT,
            api_version=API_VERSION,
            model=MODEL,
            version=VERSION,
            inputs=texts,
            correlation_id=f"bench-{index}",
        ).job
        for index, texts in enumerate(jobs)
    ]
    submit_s = time.perf_counter() - started
    process_s, calls, done = 0.0, 0, 0
    while done < len(jobs):
        records = _receive_batch(sqs, resources, batch_size)
        if not records:
            raise RuntimeError(f"the queue ran dry after {done} of {len(jobs)} jobs")
        calls_before, started = aws_calls(), time.perf_counter()
        failures = worker.process(records)
        process_s += time.perf_counter() - started
        calls += aws_calls() - calls_before
        if failures:
            raise RuntimeError(f"{len(failures)} record(s) failed: {next(iter(failures.values()))}")
        sqs.delete_message_batch(
            QueueUrl=resources.queue_url,
            Entries=[
                {"Id": str(index), "ReceiptHandle": record["receiptHandle"]}
                for index, record in enumerate(records)
            ],
        )
        done += len(records)
    if done != len(jobs):
        raise RuntimeError(f"{done} records received for {len(jobs)} jobs")
    if check:
        for job, texts in zip(submitted, jobs, strict=True):
            stored = service.store.get(job.tenant, job.job_id)
            result = service.store.result(stored) if stored is not None else None
            if stored is None or stored.status != "succeeded" or result is None:
                raise RuntimeError(f"job {job.job_id} did not succeed: {stored}")
            if len(orjson.loads(result)["outputs"]) != len(texts):
                raise RuntimeError(f"job {job.job_id}: wrong number of outputs")
    return {"process_s": process_s, "submit_s": submit_s, "aws_calls": calls}


# --- where the time goes ------------------------------------------------------------------


def cost_of_runs(runs: list[SessionRun]) -> dict[str, Any]:
    """Session runs, texts, real and padded tokens; a least-squares fit of a run's
    milliseconds as fixed + per padded token."""
    import numpy as np

    texts = np.array([run[0] for run in runs], dtype=float)
    padded = np.array([run[1] for run in runs], dtype=float)
    real = np.array([run[2] for run in runs], dtype=float)
    milliseconds = np.array([run[3] * 1000 for run in runs])
    design = np.stack([np.ones_like(padded), padded], axis=1)
    (fixed_ms, token_ms), *_ = np.linalg.lstsq(design, milliseconds, rcond=None)
    return {
        "session_runs": len(runs),
        "texts": int(texts.sum()),
        "texts_per_run_mean": float(texts.mean()),
        "real_tokens": int(real.sum()),
        "padded_tokens": int(padded.sum()),
        "padding_share": float(1 - real.sum() / padded.sum()),
        "session_ms": float(milliseconds.sum()),
        "session_ms_per_padded_token": float(milliseconds.sum() / padded.sum()),
        "fit_fixed_ms_per_run": float(fixed_ms),
        "fit_ms_per_padded_token": float(token_ms),
    }


def _rates(seconds: list[float], records: int, inputs: int) -> dict[str, Any]:
    return {
        "seconds_per_round": seconds,
        "records_per_s": median([records / value for value in seconds]),
        "inputs_per_s": median([inputs / value for value in seconds]),
    }


# --- the benchmark ------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", type=int, default=20, help="batches per round, stage (a)")
    parser.add_argument(
        "--end-to-end-batches", type=int, default=10, help="batches per round, stage (b)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="2 rounds of 3 batches; nothing is recorded"
    )
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.rounds, arguments.batches, arguments.end_to_end_batches = 2, 3, 3

    began = time.perf_counter()
    with Path(os.devnull).open("w") as sink, contextlib.ExitStack() as stack:
        aws, environment, resources = _start(stack, sink)
        outcome = _measure(arguments, aws.endpoint_url, environment, resources)
    outcome["setup"]["wall_s"] = round(time.perf_counter() - began, 1)
    _report(outcome, record=not arguments.quick)


def _start(
    stack: contextlib.ExitStack, sink: TextIO
) -> tuple[Any, ExecutionEnvironment, JobResources]:
    """moto, the job resources in it, and the worker's execution environment with the model
    loaded; the worker's log lines (and the model-load metric) go to `sink`."""
    with contextlib.redirect_stdout(sink):
        from functions.runtime.environment import ExecutionEnvironment, Settings
        from functions.runtime.models import ModelKey
        from stratoserve.declaration import load_declaration
        from stratoserve.jobs import create_job_resources
        from stratoserve.local.aws import LocalAws, function_environment
        from stratoserve.local.aws import client as aws_client

        aws = LocalAws()
        endpoint = aws.start()
        stack.callback(aws.stop)
        # The environment's boto3 clients find moto (and its dummy credentials) here, as
        # the local stack's functions do.
        os.environ.update(function_environment(endpoint))
        declaration = load_declaration(CONFIG)
        resources = create_job_resources(declaration, lambda service: aws_client(service, endpoint))
        settings = Settings(
            function="worker",
            config=CONFIG,
            jobs_table=resources.table,
            jobs_bucket=resources.bucket,
            jobs_queue_url=resources.queue_url,
        )
        environment = ExecutionEnvironment(declaration, CONFIG, "worker", settings=settings)
        environment.cache.preload([ModelKey(MODEL, VERSION)])
    return aws, environment, resources


def _timed_model(environment: ExecutionEnvironment) -> Model:
    """Wrap the cached model's runner and its session in the benchmark's timers."""
    from functions.runtime.models import ModelKey

    with environment.cache.use(ModelKey(MODEL, VERSION)) as loaded:
        embedder: Any = loaded.runner
        if not hasattr(embedder, "_session"):
            raise RuntimeError("the embed runner keeps no _session: update TimedSession's hook")
        session = embedder._session = TimedSession(embedder._session)
        runner = TimedRunner(embedder)
        loaded.runner = runner
    return Model(runner=runner, session=session, embedder=embedder)


def _measure(
    arguments: argparse.Namespace,
    endpoint: str,
    environment: ExecutionEnvironment,
    resources: JobResources,
) -> dict[str, Any]:
    from functions.worker.batch import CHUNK_INPUTS, JobWorker
    from stratoserve.local.aws import client as aws_client

    batch_size = environment.declaration.jobs.batch_size
    workers = {
        mode: JobWorker(environment, jobs=lambda: environment.jobs, batched=mode == "batched")
        for mode in MODES
    }
    model = _timed_model(environment)
    one_text_per_run = model.one_text_per_run
    series = [*MODES, *(mode + SHARED for mode in MODES)] if one_text_per_run else list(MODES)
    aws_calls = _aws_call_counter(environment)
    sqs = aws_client("sqs", endpoint)
    service = environment.jobs

    compute_jobs = texts_per_job(SEED, arguments.batches * batch_size, *TEXTS_PER_JOB)
    compute_batches = [
        compute_jobs[start : start + batch_size]
        for start in range(0, len(compute_jobs), batch_size)
    ]
    compute_inputs = sum(len(texts) for texts in compute_jobs)
    e2e_jobs = texts_per_job(SEED + 1, arguments.end_to_end_batches * batch_size, *TEXTS_PER_JOB)
    e2e_inputs = sum(len(texts) for texts in e2e_jobs)

    def compute(name: str) -> tuple[float, list[Any]]:
        worker = workers[name.removesuffix(SHARED)]
        return compute_stage(worker, model, compute_batches, shared=name.endswith(SHARED))

    def whole(mode: str, *, check: bool, jobs: list[list[str]] = e2e_jobs) -> dict[str, float]:
        return end_to_end(
            workers[mode], service, sqs, resources, jobs, batch_size, aws_calls, check=check
        )

    # Warm-up, not counted: the allocator, the caches, boto3's connections, moto's tables.
    for name in series:
        compute(name)
    for mode in MODES:
        whole(mode, check=False, jobs=e2e_jobs[:batch_size])

    compute_s: dict[str, list[float]] = {name: [] for name in series}
    compute_runs: dict[str, list[SessionRun]] = {name: [] for name in series}
    e2e: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    busy_cores: list[float] = []
    min_cosine: dict[str, float] = {}
    for round_ in range(arguments.rounds):
        # Rotate the order so no series always runs right after the same other.
        shift = round_ % len(series)
        busy, wall = machine_busy_s(), time.perf_counter()
        outputs = {}
        for name in series[shift:] + series[:shift]:
            first = len(model.session.runs)
            seconds, outputs[name] = compute(name)
            compute_s[name].append(seconds)
            compute_runs[name].extend(model.session.runs[first:])
        if round_ == 0:
            min_cosine = {
                name: _min_cosine(outputs[name], outputs[name.replace("batched", "per_record")])
                for name in series
                if name.startswith("batched")
            }
        for mode in MODES if round_ % 2 == 0 else MODES[::-1]:
            model_s, first = model.runner.seconds, len(model.session.runs)
            figures = whole(mode, check=round_ == 0)
            figures["model_s"] = model.runner.seconds - model_s
            figures["session_s"] = sum(run[3] for run in model.session.runs[first:])
            e2e[mode].append(figures)
        busy_after = machine_busy_s()
        if busy is not None and busy_after is not None:
            busy_cores.append((busy_after - busy) / (time.perf_counter() - wall))
        print(
            f"round {round_}: compute "
            + ", ".join(f"{name} {len(compute_jobs) / compute_s[name][-1]:.1f}" for name in series)
            + " rec/s; end to end "
            + ", ".join(
                f"{mode} {len(e2e_jobs) / e2e[mode][-1]['process_s']:.1f}" for mode in MODES
            )
            + " rec/s",
            flush=True,
        )

    compute_figures = {
        name: {
            **_rates(compute_s[name], len(compute_jobs), compute_inputs),
            "session_runs": cost_of_runs(compute_runs[name]),
        }
        for name in series
    }
    whole_figures = {}
    for mode in MODES:
        rounds = e2e[mode]
        records = len(e2e_jobs)
        whole_figures[mode] = {
            **_rates([r["process_s"] for r in rounds], records, e2e_inputs),
            "model_share": median([r["model_s"] / r["process_s"] for r in rounds]),
            "session_share": median([r["session_s"] / r["process_s"] for r in rounds]),
            "outside_model_ms_per_record": median(
                [(r["process_s"] - r["model_s"]) / records * 1000 for r in rounds]
            ),
            "aws_calls_per_record": median([r["aws_calls"] / records for r in rounds]),
            "outside_model_ms_per_aws_call": median(
                [(r["process_s"] - r["model_s"]) / r["aws_calls"] * 1000 for r in rounds]
            ),
            "submit_ms_per_job": median([r["submit_s"] / records * 1000 for r in rounds]),
        }
    per_record = compute_figures["per_record"]["session_runs"]
    return {
        "setup": {
            "model": "embed v2 (MiniLM-L6 int8, per-channel)",
            "session_options": "the declaration's runtime: intra_op 1, inter_op 1, "
            "cpu_mem_arena off, graph BASIC",
            "records": f"jobs of {TEXTS_PER_JOB[0]}-{TEXTS_PER_JOB[1]} sentences "
            f"(bench/sentences.py, seed {SEED})",
            "batch_size": batch_size,
            "chunk_inputs": CHUNK_INPUTS,
            "embedder_one_text_per_run": one_text_per_run,
            "rounds": arguments.rounds,
            "order": "compute series rotated each round; end to end alternating, "
            "batched first in even rounds",
            "compute": {
                "what": "JobWorker._run, batched vs not, on prepared deliveries, results "
                "serialised and logged, a job store that keeps nothing"
                + (
                    "; *_shared_runs: the same with Embedder.one_text_per_run off"
                    if one_text_per_run
                    else ""
                ),
                "batches_per_round": arguments.batches,
                "records_per_round": len(compute_jobs),
                "inputs_per_round": compute_inputs,
                "texts_per_record_mean": compute_inputs / len(compute_jobs),
                "tokens_per_text_mean": per_record["real_tokens"] / per_record["texts"],
            },
            "end_to_end": {
                "what": "JobWorker.process over SQS records; moto in this process (LocalAws), "
                "JobService.submit before each round; only process() timed; no callbacks",
                "batches_per_round": arguments.end_to_end_batches,
                "records_per_round": len(e2e_jobs),
                "inputs_per_round": e2e_inputs,
            },
            "machine_busy_cores_per_round": busy_cores,
        },
        "compute": compute_figures,
        "end_to_end": whole_figures,
        "min_cosine_batched_vs_per_record": min_cosine,
        "session_runs_all_series": cost_of_runs(
            [run for name in series for run in compute_runs[name]]
        ),
    }


def _ratio(name: str, stage: dict[str, Any], label: str, suffix: str = "") -> dict[str, Any]:
    batched = stage["batched" + suffix]["records_per_s"]
    alone = stage["per_record" + suffix]["records_per_s"]
    return {
        "name": name,
        "framework": f"{batched:.1f} records/s ({label}, batched)",
        "baseline": f"{alone:.1f} records/s ({label}, one call per record)",
        "ratio": batched / alone,
        "target": TARGET,
        "higher_is_better": True,
        "met": batched / alone >= TARGET,
    }


def _report(outcome: dict[str, Any], *, record: bool) -> None:
    compute, whole = outcome["compute"], outcome["end_to_end"]
    ratios = [
        _ratio("worker compute, batched vs one call per record (embed v2)", compute, "model"),
        _ratio("worker end to end, batched vs one call per record (embed v2)", whole, "process"),
    ]
    result: dict[str, Any] = {
        "command": "python bench/worker_throughput.py",
        "machine": machine(),
        **outcome,
        "ratios": ratios,
    }
    if "batched" + SHARED in compute:
        # Not a table row: what the worker would gain if int8 texts could share runs.
        result["ratio_if_texts_shared_session_runs"] = _ratio(
            "worker compute, texts sharing session runs", compute, "model", SHARED
        )
    for stage_name, stage in (("compute", compute), ("end to end", whole)):
        for name, figures in stage.items():
            line = (
                f"{stage_name}, {name}: {figures['records_per_s']:.1f} records/s, "
                f"{figures['inputs_per_s']:.1f} inputs/s"
            )
            if "session_runs" in figures:
                runs = figures["session_runs"]
                line += (
                    f"; {runs['session_runs']} session runs, {runs['texts_per_run_mean']:.1f} "
                    f"texts each, {runs['padding_share']:.0%} padding, "
                    f"{runs['session_ms_per_padded_token']:.3f} ms per padded token"
                )
            else:
                line += (
                    f"; {figures['model_share']:.0%} in the model, "
                    f"{figures['outside_model_ms_per_record']:.1f} ms/record outside it "
                    f"({figures['aws_calls_per_record']:.1f} AWS calls, "
                    f"{figures['outside_model_ms_per_aws_call']:.1f} ms each)"
                )
            print(line)
    fit = outcome["session_runs_all_series"]
    print(
        f"a session run costs {fit['fit_fixed_ms_per_run']:.2f} ms + "
        f"{fit['fit_ms_per_padded_token']:.3f} ms per padded token (least squares); "
        f"min cosine batched vs per record: {outcome['min_cosine_batched_vs_per_record']}"
    )
    extra = result.get("ratio_if_texts_shared_session_runs")
    for ratio in [*ratios, *([extra] if extra else [])]:
        print(f"{ratio['name']}: {ratio['ratio']:.2f}x (target >= {TARGET}x)")
    print(f"whole run {outcome['setup']['wall_s']:.0f} s")
    if record:
        path = write_result("worker_throughput", result)
        print(f"written to {path.relative_to(ROOT)}")
    else:
        print("--quick: not recorded")


if __name__ == "__main__":
    main()
