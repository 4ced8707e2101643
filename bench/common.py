"""Shared by the benchmarks: machine facts, CPU accounting, the local stack, result files,
the docs/bench/README.md table."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "bench"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
START_TIMEOUT_S = 180.0


def machine() -> dict[str, Any]:
    import onnxruntime

    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "commit": _commit(),
        # Figures taken on code that differs from the commit say so.
        "uncommitted_changes": _uncommitted(),
    }


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _uncommitted() -> bool | None:
    try:
        changed = subprocess.run(
            # The benchmarks and their results are not what they measure.
            ["git", "status", "--porcelain", "--", ".", ":!bench", ":!docs", ":!Makefile"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return bool(changed.strip())


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(ordered: list[float], percent: float) -> float | None:
    """Nearest-rank percentile of values sorted in increasing order."""
    if not ordered:
        return None
    index = min(len(ordered) - 1, max(0, round(percent / 100 * len(ordered)) - 1))
    return ordered[index]


def machine_busy_s() -> float | None:
    """CPU seconds all cores have spent busy since boot (not idle, not waiting on I/O):
    over a measurement, what exceeds the benchmark's own processes is other load."""
    try:
        fields = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle, iowait = fields[3], fields[4]
    # guest time is already counted in user time
    return (sum(fields[:8]) - idle - iowait) / CLOCK_TICKS


def tree_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) of a process and all its live descendants, from /proc."""
    try:
        total = 0
        for member in _descendants(pid):
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{member}/stat").read_text()
                fields = stat[stat.rindex(")") + 2 :].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / CLOCK_TICKS
    except (OSError, ValueError):
        return None


def _descendants(pid: int) -> Iterator[int]:
    yield pid
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                yield from _descendants(int(child))


# --- the local stack ----------------------------------------------------------------------


@dataclass
class DevStack:
    process: subprocess.Popen[bytes]
    url: str
    record: dict[str, Any]
    """stack.json as the stack wrote it: its URL, moto's URL, the job resources."""
    log: Path


def start_dev_stack(state: Path, api_key: str) -> DevStack:
    """`stratoserve dev --port 0 --quiet` with its state (and log) in `state`, as the
    tests start it; returns once it has written stack.json (it serves from then on)."""
    log = state / "dev.log"
    with log.open("ab") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stratoserve.cli",
                "dev",
                "--port",
                "0",
                "--quiet",
            ],
            cwd=ROOT,
            # The key in the environment: a command line is visible to every user (ps).
            env={
                **os.environ,
                "STRATOSERVE_STATE_DIR": str(state),
                "STRATOSERVE_DEV_API_KEY": api_key,
            },
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    path = state / "stack.json"
    deadline = time.monotonic() + START_TIMEOUT_S
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            stop_process(process)
            raise RuntimeError(f"stratoserve dev did not start:\n{log_tail(log)}")
        time.sleep(0.2)
    record: dict[str, Any] = json.loads(path.read_text())
    return DevStack(process=process, url=record["url"], record=record, log=log)


def stop_process(
    process: subprocess.Popen[bytes], stop_signal: signal.Signals = signal.SIGINT
) -> int | None:
    """Stop it the way a user does (Ctrl-C by default); killed if it takes over 20 s.
    Its exit status."""
    if process.poll() is None:
        process.send_signal(stop_signal)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    return process.returncode


def log_tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


def write_result(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    write_table()
    return path


def run_key(facts: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two results one run's: same machine, same software, same code."""
    return tuple(
        facts.get(name)
        for name in ("cpu", "cores", "python", "onnxruntime", "commit", "uncommitted_changes")
    )


def this_run(results: dict[str, dict[str, Any]]) -> tuple[Any, ...]:
    """The run most results come from (the latest date breaks a tie): results from any
    other (the GPU check, made on a lent GPU machine) are labelled as such."""
    counts = Counter(run_key(result["machine"]) for result in results.values())
    latest: dict[tuple[Any, ...], str] = {}
    for result in results.values():
        key = run_key(result["machine"])
        latest[key] = max(latest.get(key, ""), result["machine"].get("date", ""))
    return max(counts, key=lambda key: (counts[key], latest[key]))


def provenance(facts: dict[str, Any]) -> str:
    """One line: the machine, date and commit a result's figures come from."""
    tree = ", uncommitted changes" if facts.get("uncommitted_changes") else ""
    return (
        f"{facts.get('cpu', '?')}, {facts.get('cores', '?')} cores, Python "
        f"{facts.get('python', '?')}, onnxruntime {facts.get('onnxruntime', '?')}; "
        f"{facts.get('date', '?')}, commit {facts.get('commit', '?')}{tree}"
    )


def target_met(ratio: dict[str, Any]) -> bool | None:
    """Whether a result's ratio meets its target (None where no target is set)."""
    if ratio["target"] is None:
        return None
    if ratio.get("higher_is_better", False):
        return bool(ratio["ratio"] >= ratio["target"])
    return bool(ratio["ratio"] <= ratio["target"])


def target_text(ratio: dict[str, Any]) -> str:
    """The target as the tables show it: `>= 3.0x (missed)`, `none set`."""
    met = target_met(ratio)
    if met is None:
        return "none set"
    bound = ">=" if ratio.get("higher_is_better", False) else "<="
    return f"{bound} {ratio['target']}x ({'met' if met else 'missed'})"


def write_table() -> None:
    """docs/bench/README.md: one row per ratio, from every result file present."""
    results = {path.stem: json.loads(path.read_text()) for path in sorted(RESULTS.glob("*.json"))}
    current = this_run(results) if results else None
    facts: dict[str, Any] = {}
    rows = []
    for result in results.values():
        if run_key(result["machine"]) == current:
            facts = result["machine"]
            elsewhere = ""
        else:
            elsewhere = f" **(another run: {provenance(result['machine'])})**"
        for ratio in result.get("ratios", []):
            rows.append(
                f"| {ratio['name']}{elsewhere} | {ratio['framework']} | {ratio['baseline']} | "
                f"**{ratio['ratio']:.2f}x** | {target_text(ratio)} | `{result['command']}` |"
            )
    text = [
        "# Benchmarks",
        "",
        "Each ratio is measured side by side in one run (interleaved repetitions, medians).",
        "Regenerated by the benchmark scripts; the JSON files beside this page hold every figure.",
        "[report.md](report.md) (`make bench`, `python bench/report.py`) plots them and says",
        "which machine, date and commit each comes from and how many repetitions it took.",
        "",
        f"Machine: {facts.get('cpu', '?')}, {facts.get('cores', '?')} cores, Python "
        f"{facts.get('python', '?')}, onnxruntime {facts.get('onnxruntime', '?')}, "
        f"{facts.get('date', '?')} (commit {facts.get('commit', '?')}"
        f"{', uncommitted changes' if facts.get('uncommitted_changes') else ''}).",
        "",
        "| measure | stratoserve | baseline | ratio | target | reproduce |",
        "| --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
    ]
    notes = RESULTS / "NOTES.md"
    if notes.exists():
        text += [notes.read_text()]
    (RESULTS / "README.md").write_text("\n".join(text))


BENCH_KEY_ID = "benchkey01"
"""The API key id the handler benchmarks' events carry (API Gateway adds it to each)."""


@contextlib.contextmanager
def tenant_registry() -> Iterator[dict[str, str]]:
    """A moto server whose tenant registry knows BENCH_KEY_ID (a tenant on the most generous
    plan), as `stratoserve keys create` leaves it: the variables a function needs to read it.
    A function answers no keyed request without asking it, so the benchmarks pay what a
    deployed function pays (boto3 on the first request, then a cached GetItem a minute)."""
    from stratoserve.declaration import function_environment as variables
    from stratoserve.declaration import load_declaration
    from stratoserve.local.aws import LocalAws, client, function_environment
    from stratoserve.tenants import TenantRegistry, create_registry_table

    table = "bench-tenants"
    plan = load_declaration(ROOT / "stratoserve.toml").most_generous_plan() or ""
    aws = LocalAws()
    url = aws.start()
    try:
        dynamodb = client("dynamodb", url)
        create_registry_table(dynamodb, table)
        TenantRegistry(dynamodb, table).register(
            BENCH_KEY_ID, "bench", plan, tenant_id="t-bench000000000000"
        )
        yield {**function_environment(url), variables.TENANTS_TABLE: table}
    finally:
        aws.stop()
