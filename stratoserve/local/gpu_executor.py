"""The local GPU executor: what `stratoserve dev` runs in place of the Modal app.

A process of its own (as a Modal container is) that serves a small HTTP API on the
loopback and runs each call through the gpu_jobs class's real code (the calls and their
running are in gpu_calls.py; this module is the HTTP interface and the process):

    POST   /calls            {"model", "version", "inputs"} -> 202 {"call_id"}
    GET    /calls/{call_id}  -> {"status": "pending" | "succeeded" | "failed" | "cancelled", ...}
    DELETE /calls/{call_id}  -> {"status": "cancelled"} (a finished call keeps its status)
    GET    /health           -> {"ok": true, "models": [...], "provider": ...}
    GET|PUT /faults          {"error": p, "hang": p}: inject failures into later calls

Every request needs `Authorization: Bearer <token>` (the stack's token, which the worker
gets in STRATOSERVE_GPU_EXECUTOR_TOKEN), Host 127.0.0.1/localhost and no Origin; bodies
are JSON (loopback.py says why). `stratoserve dev` starts it with launch();
`python -m stratoserve.local.gpu_executor` runs it alone, with the token in that variable.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stratoserve.declaration import function_environment as variables
from stratoserve.declaration import load_declaration
from stratoserve.local.gpu_calls import Executor, ExecutorError, Faults, dump_json
from stratoserve.local.loopback import bearer_matches, check_content_type, check_origin, new_token

if TYPE_CHECKING:
    from collections.abc import Callable

    from stratoserve.local.gpu_calls import Call

FAULTS_ENV = "STRATOSERVE_GPU_FAULTS"
"""Faults from the start, e.g. "error=0.5,hang=0.1"."""
MAX_BODY_BYTES = 256 << 20
READY_TIMEOUT_S = 120.0

logger = logging.getLogger("stratoserve.gpu_executor")


# --- HTTP --------------------------------------------------------------------------------

_CALL_PATH = re.compile(r"^/calls/([A-Za-z0-9_.-]{1,100})$")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def _refused(self) -> bool:
        """Answer a caller that the loopback checks refuse; whether it was refused."""
        headers = {name.lower(): value for name, value in self.headers.items()}
        refusal = check_origin(headers, self.server.server_address[1]) or check_content_type(
            self.command, headers
        )
        if refusal is None and not bearer_matches(headers, self.server.token):
            self._answer(
                HTTPStatus.UNAUTHORIZED,
                {
                    "error": "this local GPU executor needs Authorization: Bearer "
                    f"<{variables.GPU_EXECUTOR_TOKEN}>"
                },
            )
            self.close_connection = True  # its body, if any, is left unread
            return True
        if refusal is not None:
            self.close_connection = True
            self._answer(HTTPStatus(refusal.status), {"error": refusal.message})
            return True
        return False

    def do_GET(self) -> None:
        if self._refused():
            return
        executor = self.server.executor
        path = self.path.split("?", 1)[0]
        if path == "/health":
            self._answer(HTTPStatus.OK, executor.health())
        elif path == "/faults":
            self._answer(HTTPStatus.OK, executor.faults.as_dict())
        elif match := _CALL_PATH.match(path):
            self._call_status(executor.calls.get(match.group(1)), match.group(1))
        else:
            self._not_found(path)

    def do_POST(self) -> None:
        if self._refused():
            return
        path = self.path.split("?", 1)[0]
        if path != "/calls":
            self._not_found(path)
            return
        body = self._body()
        if body is None:
            return
        problem = _call_problem(body)
        if problem:
            self._answer(HTTPStatus.BAD_REQUEST, {"error": problem})
            return
        from gpu_jobs.engine import NotServedError

        try:
            call = self.server.executor.submit(body["model"], body["version"], body["inputs"])
        except NotServedError as error:
            self._answer(HTTPStatus.NOT_FOUND, {"error": str(error)})
            return
        self._answer(HTTPStatus.ACCEPTED, {"call_id": call.call_id})

    def do_DELETE(self) -> None:
        if self._refused():
            return
        path = self.path.split("?", 1)[0]
        match = _CALL_PATH.match(path)
        if not match:
            self._not_found(path)
            return
        self._call_status(self.server.executor.calls.cancel(match.group(1)), match.group(1))

    def do_PUT(self) -> None:
        if self._refused():
            return
        path = self.path.split("?", 1)[0]
        if path != "/faults":
            self._not_found(path)
            return
        body = self._body()
        if body is None:
            return
        try:
            faults = Faults.from_json(body)
        except ValueError as error:
            self._answer(HTTPStatus.BAD_REQUEST, {"error": str(error)})
            return
        self.server.executor.faults = faults
        logger.warning("local GPU executor: faults now %s", faults.as_dict())
        self._answer(HTTPStatus.OK, faults.as_dict())

    def _call_status(self, call: Call | None, call_id: str) -> None:
        if call is None:
            self._answer(HTTPStatus.NOT_FOUND, {"error": f"no call {call_id}"})
        elif call.body is not None:
            self._send(HTTPStatus.OK, call.body)
        else:
            self._answer(HTTPStatus.OK, call.answer)

    def _body(self) -> Any:
        """The request's JSON body; None once an error has been answered."""
        import orjson

        try:
            length = int(self.headers.get("content-length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self._answer(HTTPStatus.BAD_REQUEST, {"error": "bad Content-Length"})
            return None
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._answer(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                {"error": f"body of {length} bytes; at most {MAX_BODY_BYTES}"},
            )
            return None
        raw = self.rfile.read(length)
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as error:
            self._answer(HTTPStatus.BAD_REQUEST, {"error": f"body is not JSON: {error}"})
            return None

    def _not_found(self, path: str) -> None:
        self._answer(HTTPStatus.NOT_FOUND, {"error": f"no route {self.command} {path}"})

    def _answer(self, status: HTTPStatus, body: Any) -> None:
        self._send(status, dump_json(body))

    def _send(self, status: HTTPStatus, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)


def _call_problem(body: Any) -> str | None:
    if not isinstance(body, dict):
        return 'expected an object {"model", "version", "inputs"}'
    for name in ("model", "version"):
        if not isinstance(body.get(name), str) or not body[name]:
            return f"{name}: must be a non-empty string"
    if not isinstance(body.get("inputs"), list):
        return "inputs: must be a list"
    return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, executor: Executor, sock: socket.socket, token: str) -> None:
        super().__init__(sock.getsockname()[:2], _Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.server_address = sock.getsockname()[:2]
        self.executor = executor
        self.token = token


def serve(
    config: Path,
    sock: socket.socket,
    *,
    faults: Faults,
    token: str,
    on_ready: Callable[[str], None],
) -> None:
    """Serve on the listening `sock` until interrupted."""
    os.environ[variables.CONFIG] = str(config)  # gpu_jobs.app reads the same declaration
    declaration = load_declaration(config)
    executor = Executor(declaration, config, faults=faults)
    # gpu_jobs.app (and modal, ~0.7 s of imports) loads with the first call, as a Modal
    # container starts with its first input when min_containers is 0; a missing modal is
    # said now, though.
    if importlib.util.find_spec("modal") is None:
        raise ExecutorError(
            "the local GPU executor needs modal (the gpu extra): pip install -e '.[gpu]'"
        )
    executor.start()
    server = _Server(executor, sock, token)
    host, port = sock.getsockname()[:2]
    on_ready(f"http://{host}:{port}")
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()


# --- the process, from the stack's side --------------------------------------------------


@dataclass
class ExecutorProcess:
    """The executor as `stratoserve dev` runs it: a child process on a loopback port."""

    process: subprocess.Popen[bytes]
    url: str
    token: str = field(repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> dict[str, Any]:
        """/health's answer once the executor serves; ExecutorError if it exits or hangs."""
        import json

        deadline = time.monotonic() + timeout_s
        # Straight to the loopback, whatever HTTP_PROXY says.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        health_request = urllib.request.Request(
            self.url + "/health", headers={"Authorization": f"Bearer {self.token}"}
        )
        while True:
            status = self.process.poll()
            if status is not None:
                raise ExecutorError(
                    f"the local GPU executor exited (status {status}) before it served; "
                    "see its output above"
                )
            try:
                with opener.open(health_request, timeout=1.0) as response:
                    health: dict[str, Any] = json.loads(response.read())
                    return health
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise ExecutorError(f"the local GPU executor did not answer in {timeout_s:.0f} s")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def launch(
    config: Path,
    *,
    cwd: Path,
    environment: dict[str, str] | None = None,
    token: str | None = None,
) -> ExecutorProcess:
    """Start the executor on a free loopback port (bound here, so the URL is known at once
    and no other process can take the port before the executor listens), answering callers
    that present `token` (None: a new one, in the result)."""
    token = token or new_token()
    faults = os.environ.get(FAULTS_ENV, "")
    try:
        Faults.parse(faults)
    except ValueError as error:
        raise ExecutorError(f"{FAULTS_ENV}={faults}: {error}") from None
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        port = sock.getsockname()[1]
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stratoserve.local.gpu_executor",
                "--config",
                str(config),
                "--listen-fd",
                str(sock.fileno()),
                "--exit-with",
                str(os.getpid()),
            ],
            cwd=cwd,
            env={**os.environ, **(environment or {}), variables.GPU_EXECUTOR_TOKEN: token},
            pass_fds=(sock.fileno(),),
            stdin=subprocess.DEVNULL,
        )
    finally:
        sock.close()  # the child holds its own copy
    return ExecutorProcess(process, f"http://127.0.0.1:{port}", token)


def _exit_with(parent: int) -> None:
    """Stop when `stratoserve dev` is gone, however it ended (a kill -9 included)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stratoserve.local.gpu_executor",
        description="The local GPU executor: runs gpu_jobs' Model class behind a small HTTP API.",
    )
    parser.add_argument("--config", type=Path, default=None, help="the declaration")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--listen-fd", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--exit-with", type=int, default=None, help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    # Under `stratoserve dev` (which passes the socket) only warnings: the stack's banner
    # says where it listens.
    logging.basicConfig(
        level=logging.INFO if arguments.listen_fd is None else logging.WARNING,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
    )
    from stratoserve.declaration import DeclarationError, default_path

    config = (arguments.config or default_path()).resolve()
    try:
        faults = Faults.parse(os.environ.get(FAULTS_ENV, ""))
    except ValueError as error:
        sys.stderr.write(f"error: {FAULTS_ENV}: {error}\n")
        return 2
    token = os.environ.get(variables.GPU_EXECUTOR_TOKEN, "")
    if not token:
        sys.stderr.write(
            f"error: set {variables.GPU_EXECUTOR_TOKEN} to the token callers must send "
            "(Authorization: Bearer)\n"
        )
        return 2
    if arguments.exit_with is not None:
        _exit_with(arguments.exit_with)
    if arguments.listen_fd is not None:
        sock = socket.socket(fileno=arguments.listen_fd)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((arguments.host, arguments.port))
        sock.listen(128)

    def ready(url: str) -> None:
        logger.info("local GPU executor listening on %s", url)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        serve(config, sock, faults=faults, token=token, on_ready=ready)
    except (ExecutorError, DeclarationError) as error:
        sys.stderr.write(f"error: {error}\n")
        return 2
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
