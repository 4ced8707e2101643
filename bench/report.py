"""The benchmarks' report: docs/bench/report.md and its plots (docs/bench/plots/*.png), from
the results the benchmark scripts wrote (docs/bench/*.json). `make bench` runs every
benchmark, then this; run alone, it redraws the report from whatever results are there.

Every figure comes from the result files. The machine, date and commit in the heading are
those most results share ("this run"); a result measured elsewhere or on another commit
(the GPU check, run on a lent GPU machine) is labelled as coming from another run.

    python bench/report.py
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    RESULTS,
    ROOT,
    provenance,
    run_key,
    target_text,
    this_run,
    write_table,
)
from bench.report_sections import BENCHMARKS, table

if TYPE_CHECKING:
    from bench.report_sections import Benchmark

REPORT = RESULTS / "report.md"
PLOTS = RESULTS / "plots"
NOTES = RESULTS / "NOTES.md"


# --- provenance ---------------------------------------------------------------------------


def _uncommitted(facts: dict[str, Any]) -> str:
    return {
        True: "yes (outside bench/, docs/ and the Makefile)",
        False: "no",
        None: "not recorded",
    }[facts.get("uncommitted_changes")]


def _wall_s(result: dict[str, Any]) -> float | None:
    seconds = result.get("setup", {}).get("wall_s", result.get("build_seconds"))
    return float(seconds) if seconds is not None else None


def _reproduce(command: str) -> str:
    """The command as code, a note after it (`... (on a GPU machine: ...)`) as words."""
    code, _, note = command.partition(" (")
    return f"`{code}`" + (f" ({note}" if note else "")


def _notes_link(heading_start: str) -> str:
    """A link to the NOTES.md heading that starts with `heading_start` (GitHub's anchors)."""
    if NOTES.exists():
        for line in NOTES.read_text().splitlines():
            if line.startswith("#") and line.lstrip("#").strip().startswith(heading_start):
                heading = line.lstrip("#").strip()
                anchor = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
                return f"[{heading}](NOTES.md#{anchor})"
    return "[NOTES.md](NOTES.md)"


# --- the report ---------------------------------------------------------------------------


def load_results() -> dict[str, dict[str, Any]]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(RESULTS.glob("*.json"))}


def render(results: dict[str, dict[str, Any]]) -> str:
    current = this_run(results)
    facts = next(r["machine"] for r in results.values() if run_key(r["machine"]) == current)
    dates = sorted(
        {r["machine"]["date"] for r in results.values() if run_key(r["machine"]) == current}
    )
    ours = [r for r in results.values() if run_key(r["machine"]) == current]
    total_s = sum(seconds for r in ours if (seconds := _wall_s(r)) is not None)
    lines = [
        "# Benchmark report",
        "",
        "Written by `python bench/report.py` from the result files beside this page; `make bench`",
        "runs every benchmark of bench/ one after another on one machine, then this. What each",
        "figure means and what the time goes to: [NOTES.md](NOTES.md); the table alone:",
        "[README.md](README.md).",
        "",
        f"- Machine: {facts['cpu']}, {facts['cores']} cores, Python {facts['python']}, "
        f"onnxruntime {facts['onnxruntime']}",
        f"- Date: {dates[0] if len(dates) == 1 else f'{dates[0]} to {dates[-1]}'}",
        f"- Commit: {facts['commit']}; uncommitted changes: {_uncommitted(facts)}",
        f"- The benchmarks of this run took {total_s / 60:.1f} min in all (their own wall "
        "times, set-up included)",
    ]
    others = [name for name, r in results.items() if run_key(r["machine"]) != current]
    if others:
        lines += [
            "- **From another run** (another machine or commit, labelled below): "
            + ", ".join(
                f"`{name}.json` ({provenance(results[name]['machine'])})" for name in others
            )
        ]
    lines += ["", "## Ratios", ""]
    rows = []
    for benchmark in BENCHMARKS:
        result = results.get(benchmark.result)
        for ratio in (result or {}).get("ratios", []):
            source = "this run" if run_key(result["machine"]) == current else "**another run**"
            rows.append(
                [
                    ratio["name"],
                    ratio["framework"],
                    ratio["baseline"],
                    f"**{ratio['ratio']:.2f}x**",
                    target_text(ratio),
                    source,
                ]
            )
    lines += table(["measure", "stratoserve", "baseline", "ratio", "target", "from"], rows)
    lines += ["", "## Repetitions and durations", ""]
    rows = []
    for benchmark in BENCHMARKS:
        result = results.get(benchmark.result)
        if result is None:
            rows.append([benchmark.title, "not run", "", ""])
            continue
        seconds = _wall_s(result)
        rows.append(
            [
                benchmark.title,
                benchmark.repetitions(result),
                "n/a" if seconds is None else f"{seconds:.0f} s",
                "this run" if run_key(result["machine"]) == current else "**another run**",
            ]
        )
    lines += table(["benchmark", "repetitions", "wall time", "from"], rows)
    for number, benchmark in enumerate(BENCHMARKS, start=1):
        lines += ["", f"## {number}. {benchmark.title}", ""]
        lines += _section(benchmark, results.get(benchmark.result), current)
    return "\n".join(lines) + "\n"


def _section(
    benchmark: Benchmark, result: dict[str, Any] | None, current: tuple[Any, ...]
) -> list[str]:
    if result is None:
        return [f"No result yet: `{benchmark.script}`."]
    other_run = run_key(result["machine"]) != current
    lines = []
    if other_run:
        lines += [
            f"**From another run, not this one:** {provenance(result['machine'])}. "
            f"This run left its result as it was; `{benchmark.script}` measures it anew.",
            "",
        ]
    lines += [f"Repetitions: {benchmark.repetitions(result)}.", ""]
    for ratio in result.get("ratios", []):
        lines.append(f"- {ratio['name']}: **{ratio['ratio']:.2f}x**, target {target_text(ratio)}")
    extra = result.get("ratio_if_texts_shared_session_runs")
    if extra:
        lines.append(f"- {extra['name']} (not a target row): {extra['ratio']:.2f}x")
    path = benchmark.plot(result, PLOTS / f"{benchmark.result}.png", other_run=other_run)
    plot = (
        f"![{benchmark.title}]({Path(os.path.relpath(path, REPORT.parent)).as_posix()})"
        if path is not None
        else f"No plot: this result predates what the plot needs; rerun `{benchmark.script}`."
    )
    lines += [
        "",
        *benchmark.details(result),
        "",
        plot,
        "",
        f"Reproduce: {_reproduce(result['command'])}, then `python bench/report.py`. "
        f"Why: {_notes_link(benchmark.notes)}.",
    ]
    return lines


def main() -> None:
    results = load_results()
    if not results:
        raise SystemExit(f"no results in {RESULTS.relative_to(ROOT)}: run `make bench`")
    REPORT.write_text(render(results))
    write_table()  # README.md's table, from the same files
    print(f"written to {REPORT.relative_to(ROOT)} and {PLOTS.relative_to(ROOT)}/")


if __name__ == "__main__":
    main()
