"""The fault soak's tools: its declaration, a worker killer, the local AWS outage (through
the stack's fault API), and a reading of the stack's log that survives killed writers."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import httpx
from botocore.config import Config

from stratoserve.local.aws import REGION, credentials
from tests.conftest import DECLARATION_FILE, ROOT

if TYPE_CHECKING:
    from tests.integration.stratoserve.local.dev_stack import Stack

WORKER_TIMEOUT_S = 5
"""The worker's timeout: room for a batch of BATCH_SIZE on a busy machine (an invocation
that times out costs a cold start). The jobs queue's visibility timeout is 6x this: a
batch lost with a killed worker comes back in 30 s."""
BATCH_SIZE = 5
GPU_MIN_INPUTS = 4
"""An embed (or strict) job of this many texts goes to the GPU executor."""
KILL_FROM_BATCH = 3
"""A worker environment is killed on its third batch at the earliest."""
LOOK_EVERY_S = 0.05
PIPE_WAITS = frozenset({"pipe_read", "anon_pipe_read", "pipe_wait"})
"""What /proc/PID/wchan says of a process blocked reading a pipe (by kernel version)."""


def fault_declaration(state: Path) -> Path:
    """stratoserve.toml with a short worker timeout, quick retries, a GPU threshold of
    GPU_MIN_INPUTS texts, follow-ups every second, and `strict`: embed's int8 version again
    under another name, whose GPU jobs must not fall back (a failed GPU call fails them)."""
    models = state / "models"
    (models / "strict").mkdir(parents=True)
    for name in ("digits", "embed"):
        (models / name).symlink_to(ROOT / "build" / "models" / name)
    (models / "strict" / "1").symlink_to(ROOT / "build" / "models" / "embed" / "2")
    text = DECLARATION_FILE.read_text()
    changes = {
        'models_dir = "build/models"': f'models_dir = "{models}"',
        "[functions.worker]\nmemory_mb = 2048\ntimeout_s = 180": (
            f"[functions.worker]\nmemory_mb = 2048\ntimeout_s = {WORKER_TIMEOUT_S}"
        ),
        "batch_size = 10 ": f"batch_size = {BATCH_SIZE} ",
        "retry_delay_s = 2 ": "retry_delay_s = 0.2 ",
        "gpu_min_inputs = 500 ": f"gpu_min_inputs = {GPU_MIN_INPUTS} ",
        'models = ["embed"]            # what the GPU app serves': (
            'models = ["embed", "strict"]  # what the GPU app serves'
        ),
        # Calls never hang here, but the executor's one thread may have a backlog.
        "timeout_s = 600 ": "timeout_s = 60 ",
        "retries = 2 ": "retries = 0 ",
        "deadline_s = 1800 ": "deadline_s = 120 ",
        "poll_interval_s = 10 ": "poll_interval_s = 1 ",
        '[functions.embed]\nmodels = ["embed"]': '[functions.embed]\nmodels = ["embed", "strict"]',
        # int8 embeddings only: fp32's cold starts would slow every restarted worker.
        '[api.v1]\nmodels = { digits = "1", embed = "1" }': (
            '[api.v1]\nmodels = { digits = "1", embed = "2" }'
        ),
        '[api.v2]\nmodels = { digits = "1", embed = "2" }': (
            '[api.v2]\nmodels = { digits = "1", embed = "2", strict = "1" }'
        ),
    }
    for old, new in changes.items():
        assert old in text, f"stratoserve.toml changed: update this test's {old!r}"
        text = text.replace(old, new)
    text += f"""
[models.strict]
task = "embed"
[models.strict.versions.1]
artifact = "strict/1/model.onnx"
tokenizer = "strict/1/tokenizer.json"

[routing.strict]
inline_max_inputs = 64
gpu_min_inputs = {GPU_MIN_INPUTS}
gpu_fallback = false
"""
    path = state / "stratoserve.toml"
    path.write_text(text)
    return path


def stack_record(stack: Stack) -> dict[str, Any]:
    record: dict[str, Any] = json.loads((stack.state / "stack.json").read_text())
    return record


def bearer(record: dict[str, Any]) -> dict[str, str]:
    """What the stack's own services (fault API, GPU executor) ask of a caller."""
    return {"Authorization": f"Bearer {record['token']}"}


class WorkerKiller:
    """SIGKILLs a worker execution environment in the middle of an invocation, at most
    once every `every_s` seconds, from a thread of its own; the poller's next batch
    cold-starts another.

    An environment seen waiting for its next event (its main thread blocked reading the
    pipe from the stack) has finished its init; seen doing anything else after that, it is
    running a batch. Only an environment on its third batch or later is killed: a cold
    start costs seconds on this machine, and each environment must get some work done."""

    def __init__(self, stack: Stack, every_s: float, seed: int = 7) -> None:
        self.stack = stack
        self.every_s = every_s
        self.killed: list[int] = []
        self._random = random.Random(seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="worker-killer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        batches: dict[int, int] = {}
        """Per environment (once initialised): the batches it was seen running."""
        idle: dict[int, bool] = {}
        next_kill = time.monotonic() + self.every_s
        while not self._stop.wait(LOOK_EVERY_S):
            with contextlib.suppress(OSError):  # an environment may exit as it is looked at
                busy = []
                for pid in self.stack.environments("worker"):
                    waiting = _waiting_for_an_event(pid)
                    if waiting:
                        batches.setdefault(pid, 0)
                    elif pid in batches:
                        batches[pid] += idle.get(pid, False)
                        if batches[pid] >= KILL_FROM_BATCH:
                            busy.append(pid)
                    idle[pid] = waiting
                if busy and time.monotonic() >= next_kill:
                    victim = self._random.choice(busy)
                    os.kill(victim, signal.SIGKILL)
                    self.killed.append(victim)
                    next_kill = time.monotonic() + self.every_s


def _waiting_for_an_event(pid: int) -> bool:
    return (Path("/proc") / str(pid) / "wchan").read_text().strip() in PIPE_WAITS


@dataclass
class Outage:
    """One restart of the local AWS, as a client saw it."""

    down_s: float
    refused: str = ""
    """The error of a call made while it was down (empty: the call went through)."""
    unreachable_s: float = 0.0
    """From the fault API's answer until a call went through again."""


def restart_aws(stack: Stack, down_s: float) -> Outage:
    """Take the stack's moto down for `down_s` through the fault API; check that a call
    fails meanwhile, then wait until one goes through again."""
    record = stack_record(stack)
    # ahead: making one takes a while
    sqs = _single_try_client("sqs", record["aws_url"], record["token"])
    answer = httpx.post(
        f"{record['lambda_url']}/_stratoserve/faults/aws-restart",
        json={"down_s": down_s},
        headers=bearer(record),
        timeout=30,
    )
    assert answer.status_code == 202, answer.text
    started = time.monotonic()
    assert answer.json()["endpoint_url"] == record["aws_url"], "the same port, after as before"
    outage = Outage(down_s=down_s)
    try:
        sqs.list_queues()
    except Exception as error:
        outage.refused = f"{type(error).__name__}: {error}"
    deadline = started + down_s + 30
    while True:
        try:
            sqs.list_queues()
            break
        except Exception:
            assert time.monotonic() < deadline, "the local AWS did not come back"
            time.sleep(0.1)
    outage.unreachable_s = time.monotonic() - started
    return outage


def _single_try_client(service: str, url: str, token: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=url,
        region_name=REGION,
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=5),
        **credentials(token),
    )


def faults_state(stack: Stack) -> dict[str, Any]:
    record = stack_record(stack)
    answer = httpx.get(
        f"{record['lambda_url']}/_stratoserve/faults", headers=bearer(record), timeout=10
    )
    assert answer.status_code == 200, answer.text
    state: dict[str, Any] = answer.json()
    return state


@dataclass
class StackLog:
    """The stack's log: the functions' JSON lines, and the stack's own text lines."""

    records: list[dict[str, Any]] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    torn: int = 0
    """Lines cut short (a writer killed half-way), skipped."""

    @classmethod
    def read(cls, path: Path) -> StackLog:
        log = cls()
        for line in path.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                log.text.append(line)
                continue
            try:
                log.records.append(json.loads(line))
            except json.JSONDecodeError:
                log.torn += 1
        return log

    def messages(self, message: str) -> list[dict[str, Any]]:
        return [record for record in self.records if record.get("message") == message]
