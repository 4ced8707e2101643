"""The report's plots (bench/report.py): one function per benchmark, each drawing one PNG
from that benchmark's result as its script wrote it to docs/bench/*.json.

Every figure carries, in its bottom line, the machine, date and commit its figures were
measured on, so that a PNG seen alone still says where it comes from.
"""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt
from matplotlib import ticker

from bench.common import percentile, provenance

if TYPE_CHECKING:
    from pathlib import Path

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 100
STRATOSERVE = "tab:blue"
BASELINE = "tab:orange"
OTHER = "tab:gray"
MIB = 1024 * 1024


def _figure(width: float = 7.5, height: float = 3.8) -> tuple[Figure, Axes]:
    figure, axes = plt.subplots(figsize=(width, height), dpi=DPI)
    return figure, axes


def _save(figure: Figure, path: Path, result: dict[str, Any], *, other_run: bool) -> Path:
    """Write the figure with its provenance in the bottom line (flagged when it is not the
    report's run)."""
    line = f"Measured on {provenance(result['machine'])}"
    if other_run:
        line = f"NOT FROM THIS RUN. {line}"
    color = "darkred" if other_run else "dimgray"
    figure.text(0.01, 0.01, line, fontsize=7, color=color, ha="left")
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return path


def _rounds_scatter(axes: Axes, position: float, values: list[float], color: str) -> None:
    """Each round's figure as a dot over its bar (the bar is their median)."""
    offsets = [position + 0.06 * (index - (len(values) - 1) / 2) for index in range(len(values))]
    axes.scatter(offsets, values, s=12, color="black", zorder=3, alpha=0.7, edgecolors=color)


# --- 1. cold start ------------------------------------------------------------------------

COLD_START_PHASES = (
    ("Python start-up (spawn to the script's first line)", "lightgray"),
    ("imports (+ the handler's init)", "tab:red"),
    ("model load (session + tokenizer)", "tab:green"),
    ("first request", "tab:purple"),
)
COLD_START_VARIANTS = (
    ("raw", "onnxruntime + tokenizers\n(baseline)"),
    ("framework", "stratoserve handler,\none model"),
    ("framework_as_declared", "stratoserve handler,\nas declared"),
)


def cold_start_phases(run: dict[str, Any]) -> list[float]:
    """One fresh process's milliseconds, split as COLD_START_PHASES. The handler's init
    (importing its module) includes its model load; the raw script times them apart."""
    if "init_ms" in run:
        imports = run["init_ms"] - run["model_load_ms"]
        before_first_line = run["total_ms"] - run["init_ms"] - run["first_event_ms"]
    else:
        imports = run["import_ms"]
        before_first_line = (
            run["total_ms"] - run["import_ms"] - run["model_load_ms"] - run["first_event_ms"]
        )
    return [before_first_line, imports, run["model_load_ms"], run["first_event_ms"]]


def cold_start_medians(runs: list[dict[str, Any]]) -> list[float]:
    """Each phase's median over the runs (their sum is close to the median total)."""
    phases = [cold_start_phases(run) for run in runs]
    return [statistics.median(run[index] for run in phases) for index in range(len(phases[0]))]


def cold_start(result: dict[str, Any], path: Path, *, other_run: bool) -> Path:
    variants = [(name, label) for name, label in COLD_START_VARIANTS if name in result["runs"]]
    figure, axes = _figure(8, 4.2)
    raw_total = statistics.median(run["total_ms"] for run in result["runs"]["raw"])
    for row, (name, _) in enumerate(variants):
        runs = result["runs"][name]
        phases = cold_start_medians(runs)
        left = 0.0
        for (label, color), width in zip(COLD_START_PHASES, phases, strict=True):
            axes.barh(row, width, left=left, color=color, label=label if row == 0 else None)
            left += width
        total = statistics.median(run["total_ms"] for run in runs)
        axes.text(
            left + raw_total * 0.02,
            row,
            f"{total:.0f} ms" + ("" if name == "raw" else f" ({total / raw_total:.2f}× baseline)"),
            va="center",
            fontsize=8,
        )
    axes.set_yticks(range(len(variants)), [label for _, label in variants], fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel("milliseconds from spawn to the first answer (medians of the phases)")
    axes.set_xlim(0, axes.get_xlim()[1] * 1.35)
    axes.set_title(
        f"Cold start, {result['setup']['model']}: {result['setup']['rounds']} fresh processes each"
    )
    axes.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.45, -0.2), ncol=2)
    axes.grid(axis="x", alpha=0.3)
    return _save(figure, path, result, other_run=other_run)


# --- 2. warm latency ----------------------------------------------------------------------

WARM_SERIES = (
    ("framework", "stratoserve handler (Mangum + FastAPI + model)", STRATOSERVE),
    ("raw", "raw onnxruntime (tokenize + session.run)", BASELINE),
    ("framework_only", "handler with the answer precomputed (framework alone)", OTHER),
)


def warm_latency(result: dict[str, Any], path: Path, *, other_run: bool) -> Path | None:
    """The distribution of every call's latency, as a CDF drawn from percentiles 1 to 99
    (None for a result written before warm_latency.py kept them)."""
    distributions = result.get("distribution_ms")
    if not distributions:
        return None
    figure, axes = _figure(7.5, 4.6)
    ranks = list(range(1, 100))
    for name, label, color in WARM_SERIES:
        if name not in distributions:
            continue
        shown = distributions[name]["percentiles_1_to_99"]
        p50, p99 = shown[49], shown[98]
        axes.plot(shown, ranks, color=color, label=f"{label}: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
        axes.plot([p50], [50], "o", color=color, markersize=4)
    # Log scale: the tail (p99) stays in view without squeezing the body of the curves.
    axes.set_xscale("log")
    _plain_log_ticks(axes.xaxis)
    axes.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    axes.set_ylim(0, 100)
    axes.set_xlabel("latency of one call (ms, log scale)")
    axes.set_ylabel("calls at or below (%)")
    setup = result["setup"]
    axes.set_title(
        f"Warm latency, one sentence, {setup['model']}:\n"
        f"{setup['rounds']} rounds × {setup['calls_per_round']} calls per series, interleaved",
        fontsize=10,
    )
    axes.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    axes.grid(alpha=0.3)
    return _save(figure, path, result, other_run=other_run)


# --- 3. worker throughput -----------------------------------------------------------------

WORKER_STAGES = (
    ("compute", "", "model stage"),
    ("compute", "_shared_runs", "model stage,\ntexts sharing runs"),
    ("end_to_end", "", "end to end\n(process() against moto)"),
)


def worker_throughput(result: dict[str, Any], path: Path, *, other_run: bool) -> Path:
    figure, axes = _figure()
    setup = result["setup"]
    stages = [
        (stage, suffix, label)
        for stage, suffix, label in WORKER_STAGES
        if "batched" + suffix in result[stage]
    ]
    target = result["ratios"][0]["target"]
    for group, (stage, suffix, _) in enumerate(stages):
        heights, tops = [], []
        records = setup[stage]["records_per_round"]
        for offset, (mode, color, label) in zip(
            (-0.2, 0.2),
            (("batched", STRATOSERVE, "batched"), ("per_record", BASELINE, "one call per record")),
            strict=True,
        ):
            figures = result[stage][mode + suffix]
            height = figures["records_per_s"]
            heights.append(height)
            axes.bar(
                group + offset, height, width=0.38, color=color, label=label if not group else None
            )
            per_round = [records / seconds for seconds in figures["seconds_per_round"]]
            _rounds_scatter(axes, group + offset, per_round, color)
            tops += [height, *per_round]
        axes.text(
            group, max(tops) * 1.05, f"{heights[0] / heights[1]:.2f}×", ha="center", fontsize=9
        )
    axes.set_xticks(range(len(stages)), [label for _, _, label in stages], fontsize=8)
    axes.set_ylabel("records per second (median of rounds)")
    axes.set_ylim(0, axes.get_ylim()[1] * 1.12)
    axes.set_title(
        f"Worker, batches of {setup['batch_size']} records: batched vs one call per record\n"
        f"(target ≥ {target}×; {setup['rounds']} rounds, dots: each round)",
        fontsize=10,
    )
    axes.legend(fontsize=8, loc="upper right")
    axes.grid(axis="y", alpha=0.3)
    return _save(figure, path, result, other_run=other_run)


# --- 4. gateway throughput ----------------------------------------------------------------


def gateway_throughput(result: dict[str, Any], path: Path, *, other_run: bool) -> Path:
    figure, axes = _figure(6.5, 3.8)
    setup = result["setup"]
    bars = (
        ("stack", "stratoserve dev\n(keys, plans, proxy events)", STRATOSERVE),
        ("bare", "bare uvicorn + FastAPI\n+ onnxruntime", BASELINE),
    )
    for position, (name, _, color) in enumerate(bars):
        median_rps = result["medians"][name]["throughput_rps"]
        axes.bar(position, median_rps, width=0.55, color=color)
        per_round = [run["throughput_rps"] for run in result[f"{name}_per_round"]]
        _rounds_scatter(axes, position, per_round, color)
        axes.text(
            position,
            median_rps / 2,
            f"{median_rps:.0f} req/s\n(median)",
            ha="center",
            fontsize=9,
            color="white",
        )
    ratio = result["ratios"][0]
    bare = result["medians"]["bare"]["throughput_rps"]
    axes.axhline(
        ratio["target"] * bare,
        color="black",
        linestyle="--",
        linewidth=1,
        label=f"target: {ratio['target']}× the bare app",
    )
    axes.set_xticks(range(len(bars)), [label for _, label, _ in bars], fontsize=8)
    axes.set_ylabel("successful requests per second")
    axes.set_ylim(0, axes.get_ylim()[1] * 1.1)
    axes.set_title(
        f"Local gateway throughput: {ratio['ratio']:.2f}× the bare app\n"
        f"({setup['concurrency']} in flight, {setup['rounds']} rounds of "
        f"{setup['duration_s']:g} s; dots: each round)",
        fontsize=10,
    )
    axes.legend(fontsize=8, loc="lower right")
    axes.grid(axis="y", alpha=0.3)
    return _save(figure, path, result, other_run=other_run)


# --- 5. layer sizes -----------------------------------------------------------------------


def layer_sizes(result: dict[str, Any], path: Path, *, other_run: bool) -> Path:
    """Each function's unzipped size, stacked by layer, against its limit; each layer's
    zipped size against the direct-upload limit."""
    layers = {layer["zip"]: layer for layer in result["layers"]}
    names = sorted({layer["name"] for layer in result["layers"]})
    colors = {name: plt.get_cmap("tab10")(index) for index, name in enumerate(names)}
    figure, (functions_axes, layers_axes) = plt.subplots(
        1, 2, figsize=(10, 4.6), dpi=DPI, gridspec_kw={"width_ratios": [3, 2]}
    )
    labelled: set[str] = set()
    rows = result["functions"]
    for row, function in enumerate(rows):
        left = function["code_bytes"] / MIB
        functions_axes.barh(row, left, color="black", label="code" if row == 0 else None)
        for zip_path in function["layer_zips"]:
            layer = layers[zip_path]
            width = layer["unzipped_bytes"] / MIB
            shown = layer["name"] not in labelled
            labelled.add(layer["name"])
            functions_axes.barh(
                row,
                width,
                left=left,
                color=colors[layer["name"]],
                label=layer["name"] if shown else None,
            )
            left += width
        functions_axes.text(
            left + 3, row, f"{function['unzipped_bytes'] / MIB:.1f} MB", va="center", fontsize=8
        )
    zip_limit = result["limits"]["unzipped_bytes"] / MIB
    functions_axes.axvline(zip_limit, color="black", linestyle="--", linewidth=1)
    functions_axes.text(zip_limit, -0.55, f" zip limit {zip_limit:.0f} MB", fontsize=7)
    limits = {entry["name"]: entry["limit_bytes"] for entry in result.get("function_sizes", [])}
    functions_axes.set_yticks(
        range(len(rows)),
        [
            f"{function['name']} ({function['package']}"
            + (
                f", limit {limits[function['name']] / MIB / 1024:.0f} GB)"
                if function["package"] == "image"
                else ")"
            )
            for function in rows
        ],
        fontsize=8,
    )
    functions_axes.invert_yaxis()
    functions_axes.set_xlim(0, max(zip_limit, *(f["unzipped_bytes"] / MIB for f in rows)) * 1.25)
    functions_axes.set_xlabel("unzipped MB (MiB), code + layers")
    functions_axes.set_title("Functions against Lambda's unzipped limit", fontsize=10)
    functions_axes.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=4)
    functions_axes.grid(axis="x", alpha=0.3)

    ordered = sorted(result["layers"], key=lambda layer: layer["zipped_bytes"])
    for row, layer in enumerate(ordered):
        size = layer["zipped_bytes"] / MIB
        layers_axes.barh(row, size, color=colors[layer["name"]])
        layers_axes.text(size + 1, row, f"{size:.1f}", va="center", fontsize=7)
    upload_limit = result["limits"]["direct_upload_zipped_bytes"] / MIB
    layers_axes.axvline(upload_limit, color="black", linestyle="--", linewidth=1)
    layers_axes.text(upload_limit, -0.6, f" direct upload {upload_limit:.0f} MB", fontsize=7)
    layers_axes.set_yticks(range(len(ordered)), [layer["name"] for layer in ordered], fontsize=8)
    layers_axes.set_xlim(0, max(upload_limit, ordered[-1]["zipped_bytes"] / MIB) * 1.2)
    layers_axes.set_xlabel("zipped MB (MiB)")
    layers_axes.set_title("Layers zipped (over 50 MB: through S3)", fontsize=10)
    layers_axes.grid(axis="x", alpha=0.3)
    return _save(figure, path, result, other_run=other_run)


# --- 6. GPU against CPU -------------------------------------------------------------------


def gpu_check(result: dict[str, Any], path: Path, *, other_run: bool) -> Path:
    setup, gpu = result["setup"], result["gpu_run"]
    device = (result.get("gpu") or {}).get("name", "GPU")
    bars = (
        (f"{device}\n(steady, batch {setup['batch_size']})", gpu["texts_per_s"], STRATOSERVE),
        (
            f"CPU worker,\n{result['cpu_declared_threads']['intra_op_threads']} thread "
            "(as on Lambda)",
            result["cpu_declared_threads"]["texts_per_s"],
            BASELINE,
        ),
        (
            f"CPU worker,\n{result['cpu_all_cores']['intra_op_threads']} threads (all cores)",
            result["cpu_all_cores"]["texts_per_s"],
            OTHER,
        ),
    )
    figure, axes = _figure(7, 4)
    for position, (_, value, color) in enumerate(bars):
        axes.bar(position, value, width=0.55, color=color)
        speedup = "" if position == 0 else f"\n(GPU {gpu['texts_per_s'] / value:,.1f}×)"
        axes.text(position, value * 1.15, f"{value:,.0f} texts/s{speedup}", ha="center", fontsize=8)
    axes.set_yscale("log")
    _plain_log_ticks(axes.yaxis)
    axes.set_ylim(top=gpu["texts_per_s"] * 8)
    axes.set_xticks(range(len(bars)), [label for label, _, _ in bars], fontsize=8)
    axes.set_ylabel("texts per second (log scale)")
    run = result["machine"]
    axes.set_title(
        f"GPU job vs CPU worker, {setup['model']}, {setup['texts']:,} texts"
        + (
            f"\nFROM ANOTHER RUN: {device}, {run['date']}, commit {run['commit']}"
            if other_run
            else ""
        ),
        fontsize=10,
    )
    axes.grid(axis="y", alpha=0.3, which="both")
    return _save(figure, path, result, other_run=other_run)


# --- job latency --------------------------------------------------------------------------

JOB_SERIES = (
    ("latency_s", "send → finished_at", STRATOSERVE),
    ("observed_s", "send → seen by polling", "tab:cyan"),
    ("queue_wait_s", "queue wait (created → started)", BASELINE),
    ("run_s", "run (started → finished)", "tab:green"),
)


def job_latency(result: dict[str, Any], path: Path, *, other_run: bool) -> Path:
    figure, axes = _figure()
    jobs = result["per_job"]
    for key, label, color in JOB_SERIES:
        values = sorted(job[key] for job in jobs)
        shares = [100 * (index + 1) / len(values) for index in range(len(values))]
        p50 = percentile(values, 50)
        axes.step(values, shares, where="post", color=color, label=f"{label}: p50 {p50:.2f} s")
    window = result["setup"]["batching_window_s"]
    axes.axvline(
        window, color="black", linestyle="--", linewidth=1, label=f"batching window {window:g} s"
    )
    axes.set_xlim(left=0)
    axes.set_ylim(0, 100)
    axes.set_xlabel("seconds")
    axes.set_ylabel("jobs at or below (%)")
    setup = result["setup"]
    axes.set_title(
        f"Job latency on the local stack: {setup['jobs']} jobs at {setup['rate_per_s']:g} jobs/s, "
        f"polled every {setup['poll_interval_s']:g} s",
        fontsize=10,
    )
    axes.legend(fontsize=7, loc="lower right")
    axes.grid(alpha=0.3)
    return _save(figure, path, result, other_run=other_run)


def _plain_log_ticks(axis: Any) -> None:
    """A log axis labelled 0.5, 2, 300 rather than 5x10^-1, 2x10^0, 3x10^2."""
    plain = ticker.FuncFormatter(lambda value, _: f"{value:g}")
    axis.set_major_formatter(plain)
    axis.set_minor_formatter(plain)
