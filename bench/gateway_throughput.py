"""Gateway throughput: successful requests per second, under the same closed-loop load, of

(a) `stratoserve dev`: the local gateway (uvicorn) checking the API key, the pro plan's
    token buckets and quota, turning each request into an API Gateway REST proxy event for
    one of the embed function's local execution environments (2 processes, Mangum +
    FastAPI + ONNX Runtime), POST /v2/predict/embed; against
(b) bench/bare_app.py: one FastAPI endpoint that tokenizes and runs the same model with the
    same session options, served the way a developer starts it (`uvicorn bare_app:app`,
    one process), POST /embed.

Both servers run side by side for the whole benchmark and are loaded in turn, alternating
which goes first each round; the figures are medians over the rounds. Each measurement is
a closed loop: --concurrency connections, each sending its next request when the previous
answer has arrived, for --warmup seconds (not counted) then --duration seconds (counted).
Only 200 answers count; any other status is reported (it should be 0). The load generator
runs in this process (raw asyncio streams, HTTP/1.1 keep-alive; --client httpx for
httpx.AsyncClient), on the same cores as the servers, so its CPU time is reported too, as
is the servers' (the process and all its descendants, from /proc).

Traffic goes to 127.0.0.1 only. Every process started here is stopped before exit.

    python bench/gateway_throughput.py [--rounds 3] [--concurrency 32] [--duration 8]
                                       [--warmup 2] [--client raw|httpx]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    ROOT,
    START_TIMEOUT_S,
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

if TYPE_CHECKING:
    from collections.abc import Awaitable

SENTENCE = "A man is eating a piece of bread."
BODY = json.dumps({"inputs": [SENTENCE]}).encode()
KEY = "local-dev-key-for-the-gateway-throughput-benchmark"
TARGET = 0.8
HOST = "127.0.0.1"
REQUEST_TIMEOUT_S = 30.0
EMBEDDING_SIZE = 384


@dataclass
class Server:
    name: str
    label: str
    process: subprocess.Popen[bytes]
    log: Path
    port: int
    path: str
    headers: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}{self.path}"

    def request(self) -> bytes:
        """The raw HTTP/1.1 request the raw client sends, byte for byte, every time."""
        lines = [
            f"POST {self.path} HTTP/1.1",
            f"Host: {HOST}:{self.port}",
            "Content-Type: application/json",
            f"Content-Length: {len(BODY)}",
            *(f"{name}: {value}" for name, value in self.headers.items()),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + BODY


@dataclass
class Window:
    """What one closed-loop measurement saw between its start and end."""

    started: float
    ended: float
    latencies_ms: list[float] = field(default_factory=list)
    other_statuses: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    generator_cpu_s: float = 0.0
    server_cpu_s: float | None = None
    machine_busy_s: float | None = None

    def add(self, started: float, ended: float, status: int) -> None:
        if started < self.started or ended > self.ended:
            return  # warm-up, or finished after the window closed
        if status == 200:
            self.latencies_ms.append((ended - started) * 1000)
        else:
            self.other_statuses[status] = self.other_statuses.get(status, 0) + 1

    def error(self, at: float, error: BaseException) -> None:
        if self.started <= at <= self.ended:
            name = type(error).__name__
            self.errors[name] = self.errors.get(name, 0) + 1

    def figures(self) -> dict[str, Any]:
        seconds = self.ended - self.started
        ok = len(self.latencies_ms)
        ordered = sorted(self.latencies_ms)
        figures: dict[str, Any] = {
            "requests_ok": ok,
            "throughput_rps": ok / seconds,
            "p50_ms": percentile(ordered, 50),
            "p99_ms": percentile(ordered, 99),
            "non_200": {str(status): count for status, count in self.other_statuses.items()},
            "errors": self.errors,
            "generator_cpu_s": self.generator_cpu_s,
            "generator_cores": self.generator_cpu_s / seconds,
            "generator_cpu_us_per_request": self.generator_cpu_s / ok * 1e6 if ok else None,
            "server_cpu_s": self.server_cpu_s,
            "server_cpu_ms_per_request": (
                self.server_cpu_s / ok * 1000 if ok and self.server_cpu_s is not None else None
            ),
            "server_cores": (
                self.server_cpu_s / seconds if self.server_cpu_s is not None else None
            ),
            # Every process on the machine: what exceeds server + generator is other load.
            "machine_busy_cores": (
                self.machine_busy_s / seconds if self.machine_busy_s is not None else None
            ),
        }
        return figures


# --- servers -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _start_stack(state: Path) -> Server:
    """`stratoserve dev` on a free port with its state in `state`, as the tests start it."""
    stack = start_dev_stack(state, KEY)
    url = httpx.URL(stack.url)
    assert url.host == HOST, f"the stack listens on {url}, not on {HOST}"
    return Server(
        name="stack",
        label="stratoserve dev",
        process=stack.process,
        log=stack.log,
        port=int(url.port or 80),
        path="/v2/predict/embed",
        headers={"x-api-key": KEY},
    )


def _start_bare(directory: Path) -> Server:
    """bench/bare_app.py under uvicorn, one process, on a free port.

    --no-access-log because the stack runs with --quiet: neither side writes a line per
    request (uvicorn's default access log would only slow the baseline down)."""
    port = _free_port()
    log = directory / "bare_app.log"
    with log.open("ab") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bare_app:app",
                "--host",
                HOST,
                "--port",
                str(port),
                "--no-access-log",
            ],
            cwd=ROOT / "bench",
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    return Server(
        name="bare",
        label="uvicorn + FastAPI + onnxruntime",
        process=process,
        log=log,
        port=port,
        path="/embed",
        headers={},
    )


def _check_answers(server: Server) -> None:
    """Wait until the server answers, then check it answers one embedding of the right size."""
    deadline = time.monotonic() + START_TIMEOUT_S
    with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
        while True:
            if server.process.poll() is not None:
                raise RuntimeError(f"{server.label} exited:\n{log_tail(server.log)}")
            try:
                response = client.post(server.url, content=BODY, headers=_headers(server))
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    if response.status_code != 200:
        raise RuntimeError(f"{server.label}: {response.status_code} {response.text[:500]}")
    outputs = response.json()["outputs"]
    if len(outputs) != 1 or len(outputs[0]) != EMBEDDING_SIZE:
        raise RuntimeError(f"{server.label}: unexpected outputs {str(outputs)[:200]}")


def _headers(server: Server) -> dict[str, str]:
    return {"content-type": "application/json", **server.headers}


# --- load generator -----------------------------------------------------------------------


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """One HTTP/1.1 response: its status, and whether the server closes the connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length, chunked, close = 0, False, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value
        elif name == b"connection":
            close = value == b"close"
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        await reader.readexactly(length)
    return status, close


async def _raw_worker(server: Server, window: Window) -> None:
    request = server.request()
    writer: asyncio.StreamWriter | None = None
    try:
        while time.perf_counter() < window.ended:
            started = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(HOST, server.port)
                writer.write(request)
                status, close = await asyncio.wait_for(_read_response(reader), REQUEST_TIMEOUT_S)
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as error:
                window.error(time.perf_counter(), error)
                if writer is not None:
                    writer.close()
                writer = None
                await asyncio.sleep(0.01)
                continue
            window.add(started, time.perf_counter(), status)
            if close:
                writer.close()
                writer = None
    finally:
        if writer is not None:
            writer.close()


async def _httpx_worker(server: Server, window: Window, client: httpx.AsyncClient) -> None:
    headers = _headers(server)
    while time.perf_counter() < window.ended:
        started = time.perf_counter()
        try:
            response = await client.post(server.url, content=BODY, headers=headers)
        except httpx.HTTPError as error:
            window.error(time.perf_counter(), error)
            await asyncio.sleep(0.01)
            continue
        window.add(started, time.perf_counter(), response.status_code)


async def _measure(server: Server, arguments: argparse.Namespace) -> Window:
    now = time.perf_counter()
    window = Window(
        started=now + arguments.warmup, ended=now + arguments.warmup + arguments.duration
    )

    async def sample() -> None:
        await asyncio.sleep(max(0.0, window.started - time.perf_counter()))
        cpu, server_cpu = time.process_time(), tree_cpu_s(server.process.pid)
        busy = machine_busy_s()
        await asyncio.sleep(max(0.0, window.ended - time.perf_counter()))
        window.generator_cpu_s = time.process_time() - cpu
        server_cpu_after, busy_after = tree_cpu_s(server.process.pid), machine_busy_s()
        if server_cpu is not None and server_cpu_after is not None:
            window.server_cpu_s = server_cpu_after - server_cpu
        if busy is not None and busy_after is not None:
            window.machine_busy_s = busy_after - busy

    limit = arguments.warmup + arguments.duration + REQUEST_TIMEOUT_S + 10
    async with contextlib.AsyncExitStack() as stack:
        workers: list[Awaitable[None]]
        if arguments.client == "httpx":
            pool = httpx.Limits(
                max_connections=arguments.concurrency,
                max_keepalive_connections=arguments.concurrency,
            )
            client = await stack.enter_async_context(
                httpx.AsyncClient(limits=pool, timeout=REQUEST_TIMEOUT_S)
            )
            workers = [_httpx_worker(server, window, client) for _ in range(arguments.concurrency)]
        else:
            workers = [_raw_worker(server, window) for _ in range(arguments.concurrency)]
        await asyncio.wait_for(asyncio.gather(sample(), *workers), timeout=limit)
    return window


# --- the benchmark ------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    # 32 in flight saturates both servers on 2 cores: throughput, not latency, is compared.
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds counted per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds not counted per run")
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw")
    arguments = parser.parse_args()

    began = time.perf_counter()
    servers: list[Server] = []
    runs: dict[str, list[dict[str, Any]]] = {"stack": [], "bare": []}
    with tempfile.TemporaryDirectory(prefix="gateway-throughput-") as temporary:
        directory = Path(temporary)
        state = directory / "state"
        state.mkdir()
        try:
            stack = _start_stack(state)
            servers.append(stack)
            bare = _start_bare(directory)
            servers.append(bare)
            for server in servers:
                _check_answers(server)
            for round_ in range(arguments.rounds):
                order = servers if round_ % 2 == 0 else servers[::-1]
                for server in order:
                    window = asyncio.run(_measure(server, arguments))
                    runs[server.name].append({"round": round_, **window.figures()})
                    print(
                        _line(f"round {round_} {server.label}", runs[server.name][-1]), flush=True
                    )
        except BaseException:
            for server in servers:
                print(f"--- {server.label} log (tail) ---\n{log_tail(server.log)}", file=sys.stderr)
            raise
        finally:
            for server in reversed(servers):
                stop_process(server.process)
    wall_s = time.perf_counter() - began

    summary = {name: _summary(figures) for name, figures in runs.items()}
    framework, baseline = summary["stack"]["throughput_rps"], summary["bare"]["throughput_rps"]
    if not baseline:
        raise RuntimeError(f"the bare app answered no 200 at all: {runs['bare']}")
    result = {
        "command": "python bench/gateway_throughput.py",
        "machine": machine(),
        "setup": {
            "model": "embed v2 (MiniLM-L6 int8, per-channel)",
            "input": SENTENCE,
            "framework": "stratoserve dev --quiet: gateway (uvicorn) with the dev key on the "
            "pro plan (rate 1000/s, burst 2000, quota 10M/month) -> REST proxy events -> "
            "2 local execution environments of the embed function; POST /v2/predict/embed",
            "baseline": "bench/bare_app.py: uvicorn bare_app:app --no-access-log (one process), "
            "FastAPI `def` endpoint (threadpool), tokenize + session.run; POST /embed",
            "session_options": "intra_op 1, inter_op 1, cpu_mem_arena off, graph BASIC",
            "load": "closed loop, keep-alive connections, only 200 answers counted",
            "client": "raw asyncio streams (HTTP/1.1)"
            if arguments.client == "raw"
            else "httpx.AsyncClient",
            "concurrency": arguments.concurrency,
            "warmup_s": arguments.warmup,
            "duration_s": arguments.duration,
            "rounds": arguments.rounds,
            "order": "alternating, stack first in even rounds",
            "wall_s": round(wall_s, 1),
        },
        "stack_per_round": runs["stack"],
        "bare_per_round": runs["bare"],
        "medians": summary,
        "ratios": [
            {
                "name": "throughput with keys and plans enforced (embed v2)",
                "framework": f"{framework:.0f} req/s (stratoserve dev)",
                "baseline": f"{baseline:.0f} req/s (uvicorn + FastAPI + onnxruntime)",
                "ratio": framework / baseline,
                "target": TARGET,
                "higher_is_better": True,
            }
        ],
    }
    path = write_result("gateway_throughput", result)
    print(_line("median, stratoserve dev", summary["stack"]))
    print(_line("median, bare app", summary["bare"]))
    print(f"ratio {framework / baseline:.2f}x (target >= {TARGET}x), whole run {wall_s:.0f} s")
    print(f"written to {path.relative_to(ROOT)}")


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = (
        "throughput_rps",
        "p50_ms",
        "p99_ms",
        "generator_cores",
        "generator_cpu_us_per_request",
        "server_cpu_ms_per_request",
        "server_cores",
        "machine_busy_cores",
    )
    summary: dict[str, Any] = {}
    for key in keys:
        values = [run[key] for run in runs if run[key] is not None]
        summary[key] = median(values) if values else None
    summary["non_200"] = sum(sum(run["non_200"].values()) for run in runs)
    summary["errors"] = sum(sum(run["errors"].values()) for run in runs)
    return summary


def _line(label: str, figures: dict[str, Any]) -> str:
    def shown(key: str, spec: str, unit: str) -> str:
        value = figures.get(key)
        return "n/a" if value is None else f"{value:{spec}}{unit}"

    line = (
        f"{label}: {shown('throughput_rps', '.1f', ' req/s')}, "
        f"p50 {shown('p50_ms', '.2f', ' ms')}, p99 {shown('p99_ms', '.2f', ' ms')}, "
        f"generator {shown('generator_cores', '.2f', ' cores')} "
        f"({shown('generator_cpu_us_per_request', '.0f', ' us/request')}), "
        f"server {shown('server_cpu_ms_per_request', '.2f', ' CPU ms/request')}, "
        f"machine busy {shown('machine_busy_cores', '.2f', ' cores')}"
    )
    if figures["non_200"] or figures["errors"]:
        line += f", non-200 {figures['non_200']}, errors {figures['errors']}"
    return line


if __name__ == "__main__":
    main()
