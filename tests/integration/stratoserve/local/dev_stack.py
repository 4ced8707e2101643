"""Running `stratoserve dev` from tests: a real server on a free port, its own state
directory, and the CLI pointed at it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from stratoserve.declaration import function_environment as variables
from tests.conftest import ROOT

KEY = "local-dev-key-for-the-test-suite"


class Stack:
    def __init__(
        self,
        process: subprocess.Popen[str],
        url: str,
        log: Path,
        state: Path,
        config: Path | None = None,
    ) -> None:
        self.config = config
        self.process = process
        self.url = url
        self.log = log
        self.state = state
        self.client = httpx.Client(base_url=url, timeout=60)

    def post(self, path: str, body: Any, key: str | None = KEY) -> httpx.Response:
        headers = {"x-api-key": key} if key else {}
        return self.client.post(path, json=body, headers=headers)

    def record(self) -> dict[str, Any]:
        """stack.json as the running stack wrote it."""
        record: dict[str, Any] = json.loads((self.state / "stack.json").read_text())
        return record

    def bearer(self) -> dict[str, str]:
        """The header that the stack's own services (Invoke, faults, GPU executor) ask for."""
        return {"Authorization": f"Bearer {self.record()['token']}"}

    def environments(self, function: str) -> list[int]:
        """pids of the function's local execution environments."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        pids = [int(pid) for pid in children.read_text().split()]
        found = []
        for pid in pids:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if f"AWS_LAMBDA_FUNCTION_NAME={function}".encode() in environ:
                found.append(pid)
        return found


def start_stack(state: Path, config: Path | None = None) -> Stack:
    """`stratoserve dev` on a free port with its state in `state`, once it serves."""
    log = state / "dev.log"
    # The key in the environment, as the README advises (a command line shows in `ps`).
    env = {**os.environ, "STRATOSERVE_STATE_DIR": str(state), "STRATOSERVE_DEV_API_KEY": KEY}
    if config is not None:
        env[variables.CONFIG] = str(config)
    with log.open("a") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "stratoserve.cli", "dev", "--port", "0"],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
        )
    record = state / "stack.json"
    deadline = time.monotonic() + 180
    while not record.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"stratoserve dev did not start:\n{log.read_text()}")
        time.sleep(0.2)
    return Stack(process, json.loads(record.read_text())["url"], log, state, config)


def stop_stack(stack: Stack) -> None:
    stack.process.send_signal(signal.SIGINT)
    try:
        stack.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        stack.process.kill()


def cli(stack: Stack, *arguments: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STRATOSERVE_STATE_DIR": str(stack.state)}
    if stack.config is not None:
        env[variables.CONFIG] = str(stack.config)
    return subprocess.run(
        [sys.executable, "-m", "stratoserve.cli", *arguments],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def create_key(stack: Stack, tenant: str, plan: str) -> dict[str, str]:
    created = cli(stack, "keys", "create", "--tenant", tenant, "--plan", plan, "--json")
    assert created.returncode == 0, created.stderr
    issued: dict[str, str] = json.loads(created.stdout)
    return issued


def lines(stack: Stack) -> list[dict[str, Any]]:
    """The JSON log lines the stack's functions wrote so far."""
    text = stack.log.read_text().splitlines()
    return [json.loads(line) for line in text if line.startswith("{")]
