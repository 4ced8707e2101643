"""GPU check: the GPU layer's embedder (gpu_jobs/engine.py) on ONNX Runtime's CUDA provider
against the CPU worker's model stage, on the same machine.

(a) parity: each text's vector from the GPU against the same text's from the CPU (cosine
    per text, min and mean; every text must reach 0.999).
(b) throughput: a job of --texts texts (default 10,000) through engine.run_job, a
    length-sorted batch of [gpu].max_batch_size at a time, as a GPU container runs it;
    against the CPU worker (functions.runtime.models.load_model on the CPU provider, the
    texts cut into chunks by the worker's own functions.worker.batch.chunks), once with
    the declaration's runtime.intra_op_threads (what a Lambda worker uses) and once with
    every core of this machine. The CPU is slow: each CPU run is time-boxed
    (--cpu-seconds) to a prefix of the texts and reported in texts/s.

The GPU's warm-up (loading CUDA's libraries, creating the session, the first batch) is
reported apart from its steady throughput (the median of whole passes over the job after
the first).

Texts: 1 to 3 sentences of bench/sentences.py joined (fixed seed), 2 to ~60 words each.
The model is embed version 1 (fp32) by default: the int8 graph quantizes activations per
call, so it runs one text per session run by design, which is not what a GPU should run.

Without CUDA (no onnxruntime-gpu, no GPU, or a session that fell back to the CPU) it says
so and records nothing; --allow-cpu runs it anyway on the CPU provider as a dry run,
written only outside docs/bench (a temporary folder unless --out names one).

    python bench/gpu_check.py [--texts 10000] [--cpu-seconds 20] [--version 1]
                              [--batch-size 256] [--rounds 3] [--out docs/bench]
    python bench/gpu_check.py --allow-cpu --texts 300 --cpu-seconds 5   # dry run, anywhere
    python bench/gpu_check.py --skip-without-gpu      # `make bench`: exit 0 without CUDA
    python bench/gpu_check.py --record gpu_check.json # a device run's result into docs/bench

On a lent GPU machine, bench/gpu_device/ packs, carries and runs it (docs/bench/NOTES.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, ROOT, machine, median, write_result
from bench.sentences import texts_per_job
from bench.worker_throughput import TimedSession, cost_of_runs
from models.recipes.base import file_sha256

if TYPE_CHECKING:
    from functions.runtime.models import LoadedModel
    from gpu_jobs.engine import GpuModel
    from stratoserve.declaration import Declaration

CONFIG = ROOT / "stratoserve.toml"
NAME = "gpu_check"
MODEL = "embed"
SEED = 20261128
SENTENCES_PER_TEXT = (1, 3)
PARITY_MIN_COSINE = 0.999
CUDA = "CUDAExecutionProvider"
CPU_BLOCK = 256
"""The CPU runs take the texts in blocks of this many, in the job's order; each block is
length-sorted and chunked as the worker does (functions.worker.batch.chunks). A run stops
at the end of the block during which --cpu-seconds ran out, so every text it measured
belongs to whole blocks: a prefix of the job, not its shortest texts."""
TARGET = None
"""No target is set for the GPU against the CPU worker yet."""

OK = 0
NO_CUDA = 3
PARITY_FAILED = 4


class NoCuda(Exception):
    """CUDA is not there (or the session fell back to the CPU): nothing to measure."""


def make_texts(count: int) -> list[str]:
    """`count` texts of 1 to 3 sentences each, the same for every run."""
    return [" ".join(job) for job in texts_per_job(SEED, count, *SENTENCES_PER_TEXT)]


# --- facts about this machine's GPU and onnxruntime -------------------------------------


def gpu_facts() -> dict[str, Any] | None:
    """The GPU as nvidia-smi names it (None where there is no nvidia-smi or no GPU)."""
    try:
        answer = subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=name,driver_version,memory.total",
                "--format=csv,noheader",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [line for line in answer.splitlines() if line.strip()]
    if not lines:
        return None
    name, driver, memory = (field.strip() for field in lines[0].split(",", 2))
    return {"name": name, "driver": driver, "memory": memory, "count": len(lines)}


def onnxruntime_facts() -> dict[str, Any]:
    import onnxruntime

    info: Any = None
    with contextlib.suppress(ImportError):
        from onnxruntime.capi import build_and_package_info as info
    return {
        "version": onnxruntime.__version__,
        "package": getattr(info, "package_name", "onnxruntime"),
        "cuda_build": getattr(info, "cuda_version", None),
        "location": str(Path(onnxruntime.__file__).parent),
        "available_providers": onnxruntime.get_available_providers(),
    }


# --- the GPU ------------------------------------------------------------------------------


def timed_session(loaded: LoadedModel) -> TimedSession:
    """Time the runner's session runs (texts, real and padded tokens, seconds)."""
    runner: Any = loaded.runner
    if not hasattr(runner, "_session"):
        raise RuntimeError("the embed runner keeps no _session: update gpu_check's hook")
    session = runner._session = TimedSession(runner._session)
    return session


def measure_gpu(
    declaration: Declaration,
    version: str,
    texts: list[str],
    batch_size: int,
    rounds: int,
    *,
    allow_cpu: bool,
) -> tuple[dict[str, Any], list[Any]]:
    """Warm-up, then `rounds` whole passes of the job; the figures and the first pass's
    outputs."""
    from gpu_jobs import engine

    started = time.perf_counter()
    chosen = engine.providers()  # loads CUDA's and cuDNN's libraries where there are
    preload_s = time.perf_counter() - started
    if CUDA not in chosen and not allow_cpu:
        raise NoCuda(
            "no CUDA found: this onnxruntime offers "
            f"{', '.join(onnxruntime_facts()['available_providers'])} (onnxruntime-gpu and an "
            "NVIDIA GPU are needed)"
        )
    model: GpuModel = engine.GpuModel(declaration, CONFIG, MODEL, version, providers=chosen)
    started = time.perf_counter()
    model.load()
    session_s = time.perf_counter() - started
    if model.provider != CUDA and not allow_cpu:
        raise NoCuda(
            f"no CUDA found: CUDA was asked for but the session runs on {model.provider} "
            "(is there a GPU, a driver, CUDA 13's and cuDNN 9's libraries?)"
        )
    loaded: Any = model.loaded
    session = timed_session(loaded)
    first = [texts[index] for index in engine.batches(texts, batch_size)[0]]
    started = time.perf_counter()
    model.predict(first)
    first_batch_s = time.perf_counter() - started

    request = {"model": MODEL, "version": version, "inputs": texts}
    passes: list[float] = []
    session_shares: list[float] = []
    outputs: list[Any] = []
    last: list[Any] = []
    runs_of_first_pass: list[Any] = []
    for round_ in range(rounds):
        before = len(session.runs)
        started = time.perf_counter()
        last = engine.run_job(request, model.predict, batch_size)["outputs"]
        seconds = time.perf_counter() - started
        runs = session.runs[before:]
        passes.append(seconds)
        session_shares.append(sum(run[3] for run in runs) / seconds)
        if round_ == 0:
            outputs, runs_of_first_pass = last, runs
        print(f"gpu pass {round_}: {len(texts) / seconds:,.0f} texts/s ({seconds:.2f} s)")
    steady = passes[1:] or passes
    figures = {
        "provider": model.provider,
        "providers_asked": chosen,
        "warm_up": {
            "preload_s": preload_s,
            "session_s": session_s,
            "first_batch_s": first_batch_s,
            "first_batch_texts": len(first),
            "total_s": preload_s + session_s + first_batch_s,
            "what": "engine.providers() (onnxruntime.preload_dlls), GpuModel.load() (session "
            "creation), then the job's first length-sorted batch",
        },
        "passes_s": passes,
        "first_pass_texts_per_s": len(texts) / passes[0],
        "texts_per_s": median([len(texts) / seconds for seconds in steady]),
        "steady_from": "the median of the passes after the first" if rounds > 1 else "one pass",
        "session_share": median(session_shares[1:] or session_shares),
        "session_runs": cost_of_runs(runs_of_first_pass),
        "run_to_run_min_cosine": _cosines(outputs, last)["min"] if rounds > 1 else None,
    }
    return figures, outputs


# --- the CPU worker -----------------------------------------------------------------------


def measure_cpu(
    declaration: Declaration,
    version: str,
    texts: list[str],
    threads: int,
    seconds: float,
) -> tuple[dict[str, Any], dict[int, Any]]:
    """The worker's model stage on a prefix of the texts, whole blocks, about `seconds`
    long; the figures and the outputs by text index."""
    from functions.runtime.models import ModelKey, load_model
    from functions.worker.batch import CHUNK_INPUTS, chunks
    from stratoserve.declaration import models_dir

    runtime = declaration.runtime.model_copy(update={"intra_op_threads": threads})
    loaded = load_model(
        ModelKey(MODEL, version),
        declaration.models[MODEL],
        models_dir(declaration, CONFIG),
        runtime,
    )
    runner: Any = loaded.runner
    session = timed_session(loaded)
    runner.run(runner.check(texts[:8]))  # warm-up, not counted: allocations, caches
    del session.runs[:]
    sizes = [len(text) for text in texts]
    outputs: dict[int, Any] = {}
    started = time.perf_counter()
    elapsed = 0.0
    for start in range(0, len(texts), CPU_BLOCK):
        block = sorted(range(start, min(start + CPU_BLOCK, len(texts))), key=sizes.__getitem__)
        for chunk in chunks(block, sizes):
            vectors = runner.run(runner.check([texts[index] for index in chunk]))
            for index, vector in zip(chunk, vectors, strict=True):
                outputs[index] = vector
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            break
    runs = session.runs
    figures = {
        "intra_op_threads": threads,
        "inter_op_threads": runtime.inter_op_threads,
        "load_ms": loaded.load_ms,
        "texts": len(outputs),
        "seconds": elapsed,
        "texts_per_s": len(outputs) / elapsed,
        "session_share": sum(run[3] for run in runs) / elapsed,
        "session_runs": cost_of_runs(runs),
        "chunking": f"blocks of {CPU_BLOCK} texts in the job's order, each length-sorted and "
        f"cut by functions.worker.batch.chunks (at most {CHUNK_INPUTS} a run)",
    }
    print(
        f"cpu, {threads} intra-op thread{'s' if threads > 1 else ''}: "
        f"{figures['texts_per_s']:,.1f} texts/s ({len(outputs)} texts in {elapsed:.1f} s)"
    )
    return figures, outputs


# --- parity -------------------------------------------------------------------------------


def _cosines(left: list[Any], right: list[Any]) -> dict[str, Any]:
    import numpy as np

    first = np.asarray(left, dtype=np.float64)
    second = np.asarray(right, dtype=np.float64)
    cosines = (first * second).sum(axis=1) / (
        np.linalg.norm(first, axis=1) * np.linalg.norm(second, axis=1)
    )
    return {
        "texts": len(cosines),
        "min": float(cosines.min()),
        "mean": float(cosines.mean()),
        "below_threshold": int((cosines < PARITY_MIN_COSINE).sum()),
    }


def parity(gpu: list[Any], cpu: dict[int, Any]) -> dict[str, Any]:
    """GPU against CPU, text by text, over the texts the CPU run computed."""
    indexes = sorted(cpu)
    figures = _cosines([gpu[index] for index in indexes], [cpu[index] for index in indexes])
    return {
        **figures,
        "threshold": PARITY_MIN_COSINE,
        "passed": figures["below_threshold"] == 0,
    }


# --- the check ----------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--texts", type=int, default=10_000, help="texts in the job")
    parser.add_argument(
        "--cpu-seconds", type=float, default=20.0, help="time box of each CPU run (about)"
    )
    parser.add_argument("--version", default="1", help="embed model version (1 = fp32)")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="default: [gpu].max_batch_size"
    )
    parser.add_argument("--rounds", type=int, default=3, help="whole GPU passes over the job")
    parser.add_argument(
        "--out", type=Path, default=None, help=f"folder for {NAME}.json (default docs/bench)"
    )
    parser.add_argument(
        "--allow-cpu",
        action="store_true",
        help="without CUDA, run on the CPU provider anyway: a dry run, never into docs/bench",
    )
    parser.add_argument(
        "--skip-without-gpu", action="store_true", help="without CUDA, say so and exit 0"
    )
    parser.add_argument(
        "--record", type=Path, default=None, help="write a device run's JSON into docs/bench"
    )
    parser.add_argument(
        "--preload-torch",
        action="store_true",
        help="import torch first, so that onnxruntime finds the CUDA libraries torch loaded",
    )
    arguments = parser.parse_args()
    if arguments.preload_torch:
        import torch  # noqa: F401
    if arguments.record is not None:
        return record(arguments.record)
    if arguments.texts < 1 or arguments.rounds < 1 or arguments.cpu_seconds <= 0:
        parser.error("--texts and --rounds must be at least 1, --cpu-seconds above 0")
    out = arguments.out.resolve() if arguments.out is not None else None
    if arguments.allow_cpu and (out is None or out == RESULTS.resolve()):
        # Refused before measuring, not after: a dry run never lands in docs/bench.
        if out is not None:
            parser.error("--allow-cpu never writes docs/bench: pass --out elsewhere")
        out = Path(tempfile.mkdtemp(prefix="gpu_check-"))

    # Fails now rather than after the GPU run where the worker's code does not import.
    import functions.worker.batch  # noqa: F401
    from stratoserve.declaration import load_declaration

    declaration = load_declaration(CONFIG)
    batch_size = arguments.batch_size or (
        declaration.gpu.max_batch_size if declaration.gpu is not None else 256
    )
    spec = declaration.models[MODEL]
    if arguments.version not in spec.versions:
        parser.error(f"{MODEL} has versions {', '.join(spec.versions)}, not {arguments.version}")
    precision = spec.versions[arguments.version].params.get("precision", "?")
    if precision != "fp32":
        print(
            f"warning: {MODEL} v{arguments.version} is {precision}: an int8 graph runs one text "
            "per session run by design; a GPU should run the fp32 version (--version 1)"
        )
    texts = make_texts(arguments.texts)
    print(
        f"gpu_check: {len(texts):,} texts, {MODEL} v{arguments.version} ({precision}), "
        f"batch {batch_size}, onnxruntime {onnxruntime_facts()['version']} "
        f"({onnxruntime_facts()['package']})"
    )

    began = time.perf_counter()
    try:
        gpu, gpu_outputs = measure_gpu(
            declaration,
            arguments.version,
            texts,
            batch_size,
            arguments.rounds,
            allow_cpu=arguments.allow_cpu,
        )
    except NoCuda as error:
        if arguments.skip_without_gpu:
            print(f"gpu_check skipped: {error}")
            return OK
        print(f"gpu_check: {error}; nothing measured, nothing written (--allow-cpu: dry run)")
        return NO_CUDA
    dry_run = gpu["provider"] != CUDA
    if dry_run:
        print(f"no CUDA found: the 'GPU' figures below are {gpu['provider']}'s (dry run)")
    print(
        f"gpu ({gpu['provider']}): warm-up {gpu['warm_up']['total_s']:.2f} s, steady "
        f"{gpu['texts_per_s']:,.0f} texts/s, first pass {gpu['first_pass_texts_per_s']:,.0f}"
    )

    declared_threads = declaration.runtime.intra_op_threads
    all_cores = os.cpu_count() or 1
    cpu_declared, cpu_outputs = measure_cpu(
        declaration, arguments.version, texts, declared_threads, arguments.cpu_seconds
    )
    cpu_all, cpu_all_outputs = measure_cpu(
        declaration, arguments.version, texts, all_cores, arguments.cpu_seconds
    )
    checked = parity(gpu_outputs, cpu_outputs)
    common = sorted(set(cpu_outputs) & set(cpu_all_outputs))
    cpu_threads_min = _cosines(
        [cpu_outputs[index] for index in common], [cpu_all_outputs[index] for index in common]
    )["min"]
    print(
        f"parity, GPU vs CPU over {checked['texts']} texts: cosine min {checked['min']:.6f}, "
        f"mean {checked['mean']:.6f} ({'passed' if checked['passed'] else 'FAILED'}: "
        f"every text >= {PARITY_MIN_COSINE}); CPU 1 vs {all_cores} threads min "
        f"{cpu_threads_min:.6f}"
    )

    result = build_result(
        arguments,
        declaration,
        texts=texts,
        batch_size=batch_size,
        precision=precision,
        gpu=gpu,
        cpu_declared=cpu_declared,
        cpu_all=cpu_all,
        checked=checked,
        cpu_threads_min=cpu_threads_min,
        dry_run=dry_run,
        wall_s=time.perf_counter() - began,
    )
    for ratio in result["ratios"]:
        print(f"{ratio['name']}: {ratio['ratio']:,.1f}x")
        print(f"  {ratio['framework']}\n  against {ratio['baseline']}")
    path = write(result, out)
    print(f"written to {path}" + (" (dry run: CPU provider)" if dry_run else ""))
    return OK if checked["passed"] else PARITY_FAILED


def build_result(
    arguments: argparse.Namespace,
    declaration: Declaration,
    *,
    texts: list[str],
    batch_size: int,
    precision: str,
    gpu: dict[str, Any],
    cpu_declared: dict[str, Any],
    cpu_all: dict[str, Any],
    checked: dict[str, Any],
    cpu_threads_min: float,
    dry_run: bool,
    wall_s: float,
) -> dict[str, Any]:
    from stratoserve.declaration import models_dir

    version = declaration.models[MODEL].versions[arguments.version]
    artifact = models_dir(declaration, CONFIG) / version.artifact
    runtime = declaration.runtime
    device = gpu_facts()
    facts = onnxruntime_facts()
    where = (
        f"{device['name'] if device else 'no GPU'}, {gpu['provider']}, "
        f"{facts['package']} {facts['version']}, batch {batch_size}; cosine to the CPU's "
        f"vectors >= {math.floor(checked['min'] * 1e5) / 1e5:.5f}"
    )
    host = machine()
    label = f"{MODEL} v{arguments.version} {precision}, {len(texts):,} texts"

    def ratio(name: str, cpu: dict[str, Any], baseline: str) -> dict[str, Any]:
        return {
            "name": name,
            "framework": f"{gpu['texts_per_s']:,.0f} texts/s ({where})",
            "baseline": f"{cpu['texts_per_s']:,.1f} texts/s ({baseline})",
            "ratio": gpu["texts_per_s"] / cpu["texts_per_s"],
            "target": TARGET,
            "higher_is_better": True,
        }

    threads = cpu_declared["intra_op_threads"]
    return {
        "command": "python bench/gpu_check.py (on a GPU machine: bash bench/gpu_device/run.sh)",
        "dry_run": dry_run,
        "machine": host,
        "gpu": device,
        "onnxruntime": facts,
        "setup": {
            "model": f"{MODEL} v{arguments.version} ({precision})",
            "artifact_sha256": file_sha256(artifact),
            "texts": len(texts),
            "texts_source": f"{SENTENCES_PER_TEXT[0]}-{SENTENCES_PER_TEXT[1]} sentences of "
            f"bench/sentences.py joined, seed {SEED}",
            "characters_per_text_mean": sum(map(len, texts)) / len(texts),
            "batch_size": batch_size,
            "gpu_path": "gpu_jobs.engine.run_job(request, GpuModel.predict, batch_size): "
            "length-sorted batches, one at a time, outputs as float lists",
            "rounds": arguments.rounds,
            "cpu_seconds": arguments.cpu_seconds,
            "cuda_libraries_from": "torch (imported first)"
            if arguments.preload_torch
            else "onnxruntime.preload_dlls (engine.providers())",
            "session_options": f"the declaration's runtime: inter_op {runtime.inter_op_threads}, "
            f"cpu_mem_arena {'on' if runtime.cpu_mem_arena else 'off'}, graph "
            f"{runtime.graph_optimization}; intra_op {runtime.intra_op_threads} on the GPU and "
            "as given for each CPU run",
            "wall_s": round(wall_s, 1),
        },
        "gpu_run": gpu,
        "cpu_declared_threads": cpu_declared,
        "cpu_all_cores": cpu_all,
        "parity_gpu_vs_cpu": checked,
        "cpu_declared_vs_all_cores_min_cosine": cpu_threads_min,
        "ratios": [
            ratio(
                f"GPU job vs CPU worker, {threads} thread{'s' if threads != 1 else ''} ({label})",
                cpu_declared,
                f"CPU worker, runtime.intra_op_threads = {threads}, as on Lambda",
            ),
            ratio(
                f"GPU job vs CPU worker, all cores ({label})",
                cpu_all,
                f"CPU worker, {cpu_all['intra_op_threads']} intra-op threads, same machine: "
                f"{host['cpu']}",
            ),
        ],
    }


def write(result: dict[str, Any], out: Path | None) -> Path:
    """docs/bench (and its README's table) for a CUDA run by default; elsewhere, the file
    alone. A dry run never reaches here with docs/bench as `out`."""
    if out is None or out == RESULTS.resolve():
        assert not result["dry_run"]
        return write_result(NAME, result)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{NAME}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def record(path: Path) -> int:
    """A result made on a GPU machine (with --out there) into docs/bench, table included."""
    result: dict[str, Any] = json.loads(path.read_text())
    provider = result.get("gpu_run", {}).get("provider")
    if result.get("dry_run") or provider != CUDA:
        print(f"{path}: a dry run on {provider}, not recorded")
        return NO_CUDA
    if not result.get("parity_gpu_vs_cpu", {}).get("passed"):
        print(f"warning: {path} failed parity (GPU vs CPU cosine below {PARITY_MIN_COSINE})")
    written = write_result(NAME, result)
    print(f"recorded {path} as {written.relative_to(ROOT)} (docs/bench/README.md regenerated)")
    return OK


if __name__ == "__main__":
    sys.exit(main())
