"""The report's sections (bench/report.py), one per benchmark: what it repeated, its
figures as a table, its plot (bench/report_plots.py) and the heading in NOTES.md that
explains it. Everything comes from the benchmark's result file.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench import report_plots as plots

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


@dataclass(frozen=True)
class Benchmark:
    result: str
    """The result file's stem in docs/bench."""
    title: str
    script: str
    """How to run it, where there is no result yet."""
    notes: str
    """The start of its heading in NOTES.md, which explains its figures."""
    repetitions: Callable[[dict[str, Any]], str]
    details: Callable[[dict[str, Any]], list[str]]
    plot: Callable[..., Path | None]
    """report_plots' function: (result, path, *, other_run) -> the PNG (None: not drawn)."""


# --- what each benchmark repeated, and its figures as a table ----------------------------


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + " --- |" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def _cold_start_repetitions(result: dict[str, Any]) -> str:
    return (
        f"{result['setup']['rounds']} fresh processes per variant, after one unmeasured spawn "
        "each (bytecode, page cache); medians"
    )


def _cold_start_details(result: dict[str, Any]) -> list[str]:
    labels = [label for label, _ in plots.COLD_START_PHASES]
    rows = []
    for name, variant in plots.COLD_START_VARIANTS:
        if name not in result["runs"]:
            continue
        runs = result["runs"][name]
        phases = plots.cold_start_medians(runs)
        total = statistics.median(run["total_ms"] for run in runs)
        rows.append(
            [variant.replace("\n", " "), *(f"{value:.0f}" for value in phases), f"{total:.0f}"]
        )
    header = ["ms (median)", *labels, "total"]
    lines = table(header, rows)
    if "as_declared" in result:
        lines += ["", f"As declared: {result['as_declared']['note']}."]
    return lines


def _warm_repetitions(result: dict[str, Any]) -> str:
    setup = result["setup"]
    return (
        f"{setup['rounds']} rounds × {setup['calls_per_round']} calls per series, the series "
        "rotated each round, after 50 warm-up calls each; the ratio is of the medians of the "
        "round medians"
    )


def _warm_details(result: dict[str, Any]) -> list[str]:
    distributions = result.get("distribution_ms")
    if not distributions:
        return ["This result keeps no per-call distribution: rerun `python bench/warm_latency.py`."]
    rows = []
    for name, label, _ in plots.WARM_SERIES:
        shown = distributions[name]["percentiles_1_to_99"]
        rows.append(
            [
                label,
                str(distributions[name]["calls"]),
                *(f"{shown[rank - 1]:.3f}" for rank in (1, 50, 90, 99)),
                f"{distributions[name]['max']:.3f}",
            ]
        )
    lines = table(["series", "calls", "p1 ms", "p50 ms", "p90 ms", "p99 ms", "max ms"], rows)
    breakdown = ", ".join(
        f"{name} {value:.3f} ms" for name, value in result["breakdown_ms"].items()
    )
    return [*lines, "", f"Where the handler's median goes: {breakdown}."]


def _worker_repetitions(result: dict[str, Any]) -> str:
    setup = result["setup"]
    compute, whole = setup["compute"], setup["end_to_end"]
    return (
        f"{setup['rounds']} rounds; each round {compute['batches_per_round']} batches "
        f"({compute['records_per_round']} records) per model-stage series and "
        f"{whole['batches_per_round']} batches ({whole['records_per_round']} records) per end-"
        "to-end series, order rotated; medians over the rounds"
    )


def _worker_details(result: dict[str, Any]) -> list[str]:
    rows = []
    for stage, suffix, label in plots.WORKER_STAGES:
        if "batched" + suffix not in result[stage]:
            continue
        batched = result[stage]["batched" + suffix]["records_per_s"]
        alone = result[stage]["per_record" + suffix]["records_per_s"]
        rows.append(
            [label.replace("\n", " "), f"{batched:.1f}", f"{alone:.1f}", f"{batched / alone:.2f}x"]
        )
    lines = table(["stage", "batched records/s", "one call per record records/s", "ratio"], rows)
    cosines = result.get("min_cosine_batched_vs_per_record", {})
    if cosines:
        shown = ", ".join(f"{name} {value:.4f}" for name, value in cosines.items())
        lines += [
            "",
            f"Least cosine, batched against per-record vectors of the same text: {shown}.",
        ]
    busy = result["setup"].get("machine_busy_cores_per_round")
    if busy:
        shown = ", ".join(f"{cores:.2f}" for cores in busy)
        lines += ["", f"Machine busy (every process), cores per round: {shown}."]
    return lines


def _gateway_repetitions(result: dict[str, Any]) -> str:
    setup = result["setup"]
    return (
        f"{setup['rounds']} rounds per server, each {setup['warmup_s']:g} s warm-up + "
        f"{setup['duration_s']:g} s counted, {setup['concurrency']} requests in flight, "
        "servers alternated; medians over the rounds"
    )


def _gateway_details(result: dict[str, Any]) -> list[str]:
    def shown(value: float | None, spec: str) -> str:
        return "n/a" if value is None else f"{value:{spec}}"

    rows = []
    for name, label in (("stack", "stratoserve dev"), ("bare", "bare app")):
        figures = result["medians"][name]
        rows.append(
            [
                label,
                shown(figures["throughput_rps"], ".1f"),
                shown(figures["p50_ms"], ".1f"),
                shown(figures["p99_ms"], ".1f"),
                shown(figures["server_cpu_ms_per_request"], ".2f"),
                shown(figures["machine_busy_cores"], ".2f"),
                str(figures["non_200"]),
                str(figures["errors"]),
            ]
        )
    header = [
        "server",
        "req/s",
        "p50 ms",
        "p99 ms",
        "server CPU ms/request",
        "machine busy, cores",
        "non-200",
        "errors",
    ]
    cores = result["machine"]["cores"]
    return [
        *table(header, rows),
        "",
        f"Machine busy counts every process on the {cores} cores: what exceeds the server's and "
        "the load generator's share is other load.",
    ]


def _layers_repetitions(result: dict[str, Any]) -> str:
    return (
        f"one `stratoserve layers build` ({result['build_seconds']:g} s; up-to-date layers skipped)"
    )


def _layers_details(result: dict[str, Any]) -> list[str]:
    rows = [
        [
            function["name"],
            function["package"],
            f"{function['unzipped_bytes'] / plots.MIB:.1f}",
            f"{function['zipped_bytes'] / plots.MIB:.1f}",
            f"{function['limit_bytes'] / plots.MIB:,.0f}",
            f"{function['unzipped_bytes'] / function['limit_bytes']:.0%}",
        ]
        for function in result["function_sizes"]
    ]
    header = ["function", "package", "unzipped MB", "zipped MB", "limit MB", "of the limit"]
    return [*table(header, rows), *("", *(f"- {note}" for note in result.get("notes", [])))]


def _gpu_repetitions(result: dict[str, Any]) -> str:
    setup = result["setup"]
    return (
        f"{setup['rounds']} GPU passes over {setup['texts']:,} texts (steady: the median of "
        f"the passes after the first); each CPU run time-boxed to {setup['cpu_seconds']:g} s"
    )


def _gpu_details(result: dict[str, Any]) -> list[str]:
    gpu, parity = result["gpu_run"], result["parity_gpu_vs_cpu"]
    device = result.get("gpu") or {}
    warm_up = gpu["warm_up"]
    return [
        f"GPU: {device.get('name', '?')} (driver {device.get('driver', '?')}), "
        f"{result['onnxruntime']['package']} {result['onnxruntime']['version']}, "
        f"{gpu['provider']}; host {result['machine']['cpu']}, {result['machine']['cores']} cores.",
        f"Parity over {parity['texts']:,} texts: cosine min {parity['min']:.6f}, mean "
        f"{parity['mean']:.6f} ({'passed' if parity['passed'] else 'FAILED'}, threshold "
        f"{parity['threshold']}). Warm-up {warm_up['total_s']:.2f} s; first pass "
        f"{gpu['first_pass_texts_per_s']:,.0f} texts/s.",
    ]


def _job_repetitions(result: dict[str, Any]) -> str:
    setup = result["setup"]
    return (
        f"{setup['jobs']} jobs ({setup['texts']:,} texts) at {setup['rate_per_s']:g} jobs/s "
        f"from {setup['threads']} client threads, after {setup['warmup_jobs']} warm-up jobs"
    )


def _job_details(result: dict[str, Any]) -> list[str]:
    summary = result["summary"]
    rows = []
    for key, label, unit in (
        ("latency_s", "send → finished_at", "s"),
        ("observed_by_polling_s", "send → seen by polling", "s"),
        ("queue_wait_s", "queue wait", "s"),
        ("run_s", "run", "s"),
        ("accepted_ms", "202 round trip", "ms"),
    ):
        figures = summary[key]
        rows.append(
            [f"{label} ({unit})", *(f"{figures[name]:.3f}" for name in ("p50", "p95", "max"))]
        )
    facts = [
        f"jobs went in at {summary['jobs_per_s']:.2f} a second "
        f"(asked for {result['setup']['rate_per_s']:g})"
    ]
    if (cpu := summary.get("stack_cpu_ms_per_job")) is not None:
        facts.append(f"the stack spent {cpu:.0f} ms of CPU a job")
    if (busy := summary.get("machine_busy_cores")) is not None:
        facts.append(f"the machine was busy {busy:.2f} cores (every process)")
    return [*table(["", "p50", "p95", "max"], rows), "", f"During the run {'; '.join(facts)}."]


def _quality_repetitions(result: dict[str, Any]) -> str:
    return (
        f"the figures `stratoserve models build` measured on each version when it was built "
        f"({result['build_seconds']:g} s now; up-to-date versions skipped)"
    )


def _quality_details(result: dict[str, Any]) -> list[str]:
    rows = [
        [
            f"{entry['model']} v{entry['version']} ({entry['recipe']})",
            entry["measure"],
            f"{entry['value']:.4f}",
            f"{entry['gate']}",
            entry["detail"],
            f"{entry['size_bytes'] / 1024:,.1f}",
            entry["built_at"][:10],
        ]
        for entry in result["versions"]
    ]
    header = ["version", "measure", "value", "build gate", "also", "size KB", "built"]
    return table(header, rows)


def _no_plot(*_: Any, **__: Any) -> None:
    return None


BENCHMARKS = (
    Benchmark(
        "cold_start", "Cold start", "python bench/cold_start.py", "Cold start",
        _cold_start_repetitions, _cold_start_details, plots.cold_start,
    ),
    Benchmark(
        "warm_latency", "Warm latency", "python bench/warm_latency.py", "Warm latency",
        _warm_repetitions, _warm_details, plots.warm_latency,
    ),
    Benchmark(
        "worker_throughput", "Worker throughput, batched vs per record",
        "python bench/worker_throughput.py", "Worker throughput",
        _worker_repetitions, _worker_details, plots.worker_throughput,
    ),
    Benchmark(
        "gateway_throughput", "Local gateway throughput", "python bench/gateway_throughput.py",
        "Local stack throughput", _gateway_repetitions, _gateway_details,
        plots.gateway_throughput,
    ),
    Benchmark(
        "layers", "Layer sizes against Lambda's limits", "python bench/layer_sizes.py",
        "Lambda layers", _layers_repetitions, _layers_details, plots.layer_sizes,
    ),
    Benchmark(
        "gpu_check", "GPU against CPU", "python bench/gpu_check.py", "GPU check",
        _gpu_repetitions, _gpu_details, plots.gpu_check,
    ),
    Benchmark(
        "job_latency", "Job latency on the local stack", "python bench/job_latency.py",
        "Job latency", _job_repetitions, _job_details, plots.job_latency,
    ),
    Benchmark(
        "model_quality", "Model quality against the build's gates",
        "python bench/model_quality.py", "Model quality",
        _quality_repetitions, _quality_details, _no_plot,
    ),
)  # fmt: skip
