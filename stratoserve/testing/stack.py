"""The project's local stack under test: `stratoserve dev` in a subprocess on a free port,
with its own state folder, a key per declared plan, and a clean stop.

It is started exactly as a developer starts it (`python -m stratoserve.cli dev`), so a test
talks to the same gateway, the same local Lambda environments and the same moto as
`make dev` does: real HTTP, keys and plans enforced.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stratoserve.client import Client
from stratoserve.declaration import function_environment as variables
from stratoserve.keys import IssuedKey

if TYPE_CHECKING:
    from pathlib import Path

    from stratoserve.declaration import Declaration

START_TIMEOUT_S = 180.0
"""How long the stack may take to serve: every function's cold start, the GPU executor's."""
STOP_TIMEOUT_S = 30.0
"""How long a stop waits after SIGINT before it kills."""
LOG_TAIL_LINES = 40


class StackStartError(RuntimeError):
    """The stack did not start; the message says why (and what to do, where known)."""


@dataclass(frozen=True)
class DevStack:
    """The running `stratoserve dev` of a test session.

    `url` is its base URL, `state` its state folder (stack.json, keys.json, dev.log),
    `dev_key` the dev tenant's key (on the most generous plan), `keys` a key per declared
    plan, for tenant `test-<plan>`."""

    url: str
    state: Path
    config: Path
    declaration: Declaration
    dev_key: str
    keys: dict[str, IssuedKey]
    process: subprocess.Popen[bytes]

    @property
    def log(self) -> Path:
        """Everything the stack and its functions wrote (JSON log lines among them)."""
        return self.state / "dev.log"

    @property
    def default_plan(self) -> str:
        """The most generous declared plan: the one a client gets unless asked for another."""
        plan = self.declaration.most_generous_plan()
        if plan is None:
            raise LookupError(f"{self.config} declares no plans")
        return plan

    def key(self, plan: str | None = None) -> str:
        """The API key of tenant `test-<plan>` (default: the most generous plan)."""
        return self.issued(plan).key

    def issued(self, plan: str | None = None) -> IssuedKey:
        plan = plan or self.default_plan
        try:
            return self.keys[plan]
        except KeyError:
            declared = ", ".join(sorted(self.keys))
            raise LookupError(f"no plan {plan!r} in {self.config} (declared: {declared})") from None

    def client(self, plan: str | None = None, **options: Any) -> Client:
        """A new `stratoserve.client.Client` for the stack with `plan`'s key; `options` go to
        Client (`api_version`, `max_retries`, `timeout_s`). The caller closes it."""
        return Client(self.url, self.key(plan), **options)

    def record(self) -> dict[str, Any]:
        """stack.json as the running stack wrote it (its local AWS, its Invoke API...)."""
        record: dict[str, Any] = json.loads((self.state / "stack.json").read_text())
        return record

    def cli(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        """`stratoserve ARGUMENTS...` against this stack (its declaration and state folder),
        output captured: `stack.cli("jobs", "list", "--json")`."""
        return subprocess.run(
            [sys.executable, "-m", "stratoserve.cli", *arguments],
            cwd=self.config.parent,
            env=_environment(self.state, self.config),
            capture_output=True,
            text=True,
            check=False,
        )

    def create_key(self, tenant: str, plan: str) -> IssuedKey:
        """A new key for `tenant` on `plan` (`stratoserve keys create --json`)."""
        created = self.cli(
            "keys", "create", "--tenant", tenant, "--plan", plan, "--config", str(self.config),
            "--json",
        )  # fmt: skip
        if created.returncode != 0:
            raise RuntimeError(
                f"stratoserve keys create --tenant {tenant} --plan {plan} failed: "
                f"{created.stderr.strip() or created.stdout.strip()}"
            )
        return IssuedKey(**json.loads(created.stdout))


def start(
    config: Path, declaration: Declaration, state: Path, *, timeout_s: float = START_TIMEOUT_S
) -> DevStack:
    """`stratoserve dev --port 0` for `config`, its state in `state`, once it answers;
    then a key per declared plan. StackStartError when it does not come up (one line that
    says to run `stratoserve models build` where the models are not built)."""
    from stratoserve.local.stack import missing_artifacts

    missing = missing_artifacts(declaration, config)
    if missing:
        raise StackStartError(
            f"{len(missing)} model artifact(s) of {config} not built (e.g. {missing[0]}): "
            "run `stratoserve models build` first"
        )
    dev_key = secrets.token_urlsafe(30)
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    log = state / "dev.log"
    # The key in the environment, as the README advises (a command line shows in `ps`).
    environment = {**_environment(state, config), "STRATOSERVE_DEV_API_KEY": dev_key}
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "stratoserve.cli", "dev", "--config", str(config),
             "--port", "0", "--quiet"],
            cwd=config.parent,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        url = _wait_until_serving(process, state, timeout_s)
        stack = DevStack(
            url=url,
            state=state,
            config=config,
            declaration=declaration,
            dev_key=dev_key,
            keys={},
            process=process,
        )
        for plan in declaration.plans:
            stack.keys[plan] = stack.create_key(f"test-{plan}", plan)
    except BaseException:
        _terminate(process)
        raise
    return stack


def stop(stack: DevStack) -> None:
    """SIGINT (the stack stops its parts in order and removes stack.json), then wait, then
    kill."""
    _terminate(stack.process)


def _terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _wait_until_serving(process: subprocess.Popen[bytes], state: Path, timeout_s: float) -> str:
    """The URL from stack.json once the stack has written it and answers GET /health."""
    import httpx

    record = state / "stack.json"
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise StackStartError(
                f"stratoserve dev exited with status {process.returncode}; "
                f"its last lines ({state / 'dev.log'}):\n{log_tail(state)}"
            )
        if time.monotonic() > deadline:
            raise StackStartError(
                f"stratoserve dev did not serve within {timeout_s:.0f} s; "
                f"its last lines ({state / 'dev.log'}):\n{log_tail(state)}"
            )
        if record.exists():
            with contextlib.suppress(ValueError, KeyError, OSError, httpx.HTTPError):
                url = str(json.loads(record.read_text())["url"])
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    return url
        time.sleep(0.2)


def log_tail(state: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of the stack's output (state/dev.log)."""
    with contextlib.suppress(FileNotFoundError):
        return "\n".join((state / "dev.log").read_text(errors="replace").splitlines()[-lines:])
    return ""


def _environment(state: Path, config: Path) -> dict[str, str]:
    """This process's environment, pointed at the test's state folder and declaration
    (never the developer's own .stratoserve/ or running stack), without a dev key."""
    environment = {
        name: value for name, value in os.environ.items() if name != "STRATOSERVE_DEV_API_KEY"
    }
    environment["STRATOSERVE_STATE_DIR"] = str(state)
    environment[variables.CONFIG] = str(config)
    return environment
