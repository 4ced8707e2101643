"""Local Lambda execution environments, seen from the gateway.

Each environment is a separate Python process (its own imports, its own models, its own
cold start) that answers one invocation at a time, as on Lambda. A function's pool starts
environments on demand up to its declared `local_environments`; concurrent requests beyond
that wait for one to free up. An environment that crashes or overruns its timeout is
killed and replaced by the next request's cold start, as Lambda does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stratoserve.local.framing import HEADER, decode, encode
from stratoserve.local.runtime_interface import PIPES_ENV

if TYPE_CHECKING:
    from pathlib import Path

# Lambda gives init 10 s; a first local run also compiles bytecode, so allow more here.
INIT_TIMEOUT_S = 120.0


# What a Lambda execution environment inherits: its own variables, not the developer's
# shell (no AWS credentials, no dev API key). Locale, paths and the interpreter's set-up
# pass through so the same Python runs; POWERTOOLS_* lets a developer turn up log levels.
_INHERITED = frozenset(
    {
        "PATH",
        "HOME",
        "LANG",
        "LC_ALL",
        "TZ",
        "TMPDIR",
        "PYTHONPATH",
        "VIRTUAL_ENV",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONHASHSEED",
    }
)
_INHERITED_PREFIXES = ("POWERTOOLS_", "OPENBLAS_", "OMP_", "LD_")


class InvocationError(Exception):
    """The function did not return a result: it raised, crashed, or timed out."""

    def __init__(
        self, message: str, *, timed_out: bool = False, error: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.timed_out = timed_out
        self.error = error
        """What the handler raised (`errorType`, `errorMessage`), as Lambda reports it."""


class NeverDelivered(InvocationError):
    """The environment was gone before the event reached it: safe to send elsewhere."""


class AtConcurrencyLimit(Exception):
    """Every environment the function may have is busy (asked not to wait for one)."""


@dataclass(frozen=True)
class FunctionConfig:
    name: str
    handler: str
    memory_mb: int
    timeout_s: int
    max_environments: int
    environment: dict[str, str] = field(default_factory=dict)


@dataclass
class Invocation:
    result: Any
    cold_start: bool
    init_ms: float | None
    duration_ms: float


class LocalEnvironment:
    """One running environment process and the pipes to it."""

    def __init__(self, config: FunctionConfig, *, cwd: Path) -> None:
        self.config = config
        self._cwd = cwd
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.init_ms: float | None = None

    @property
    def alive(self) -> bool:
        # The pipe's end-of-file is seen before the child is reaped: check both.
        return (
            self._process is not None
            and self._process.returncode is None
            and self._reader is not None
            and not self._reader.at_eof()
        )

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            # Init failed or was cancelled: never leave the process behind.
            await self.stop()
            raise

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        to_child_read, to_child_write = os.pipe()
        from_child_read, from_child_write = os.pipe()
        inherited = {
            name: value
            for name, value in os.environ.items()
            if name in _INHERITED or name.startswith(_INHERITED_PREFIXES)
        }
        env = {
            **inherited,
            **self.config.environment,
            "_HANDLER": self.config.handler,
            "AWS_LAMBDA_FUNCTION_NAME": self.config.name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.config.memory_mb),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "PYTHONUNBUFFERED": "1",
            PIPES_ENV: f"{to_child_read},{from_child_write}",
        }
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "stratoserve.local.runtime_interface",
            env=env,
            cwd=self._cwd,
            pass_fds=(to_child_read, from_child_write),
            stdin=asyncio.subprocess.DEVNULL,
        )
        os.close(to_child_read)
        os.close(from_child_write)
        reader = self._reader = asyncio.StreamReader(limit=2**31)
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe_file(loop, from_child_read, "rb")
        )
        transport, protocol = await loop.connect_write_pipe(
            asyncio.streams.FlowControlMixin, pipe_file(loop, to_child_write, "wb")
        )
        self._writer = asyncio.StreamWriter(transport, protocol, None, loop)
        try:
            ready = await asyncio.wait_for(self._read_frame(), INIT_TIMEOUT_S)
        except (TimeoutError, InvocationError) as error:
            raise InvocationError(f"{self.config.name}: init failed: {error}") from None
        if "init_error" in ready:
            failure = ready["init_error"]
            raise InvocationError(
                f"{self.config.name}: init failed: {failure['errorType']}: "
                f"{failure['errorMessage']}"
            )
        self.init_ms = float(ready["init_ms"])

    async def invoke(self, event: Any, request_id: str) -> Any:
        assert self._writer is not None
        if not self.alive:
            raise NeverDelivered(f"{self.config.name}: the environment had exited")
        deadline_ms = int((time.time() + self.config.timeout_s) * 1000)
        frame = {"event": event, "request_id": request_id, "deadline_ms": deadline_ms}
        try:
            self._writer.write(encode(frame))
            await self._writer.drain()
            await self._read_frame()  # the receipt
        except (ConnectionError, InvocationError):
            await self.stop()
            raise NeverDelivered(f"{self.config.name}: the environment had exited") from None
        except BaseException:
            await self.stop()
            raise
        try:
            reply = await asyncio.wait_for(self._read_frame(), self.config.timeout_s)
        except TimeoutError:
            await self.stop()
            raise InvocationError(
                f"{self.config.name}: task timed out after {self.config.timeout_s} s",
                timed_out=True,
            ) from None
        except InvocationError:
            await self.stop()
            raise InvocationError(f"{self.config.name}: the environment exited") from None
        except BaseException:
            # Cancelled mid-invocation: its reply would reach the next caller. Discard it.
            await self.stop()
            raise
        if "error" in reply:
            raise InvocationError(
                f"{self.config.name}: {reply['error']['errorType']}: "
                f"{reply['error']['errorMessage']}",
                error=reply["error"],
            )
        return reply["result"]

    async def stop(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._process is not None and self._process.returncode is None:
            self._process.kill()
            await self._process.wait()

    async def _read_frame(self) -> Any:
        assert self._reader is not None
        try:
            header = await self._reader.readexactly(HEADER.size)
            (length,) = HEADER.unpack(header)
            return decode(await self._reader.readexactly(length))
        except asyncio.IncompleteReadError:
            raise InvocationError("the environment exited") from None


def pipe_file(loop: asyncio.AbstractEventLoop, fd: int, mode: str) -> Any:
    """The file object a pipe transport takes, owning `fd` exactly once. asyncio's
    transports close the descriptor through the file object; uvloop's hand it to libuv,
    which closes it, and the file object would close the same number again, by then
    perhaps another thread's socket: the local AWS's answers reached the wrong connection
    (MagicStack/uvloop#763). Under uvloop the file object leaves the descriptor alone."""
    return os.fdopen(fd, mode, closefd=not type(loop).__module__.startswith("uvloop"))


class FunctionPool:
    """The execution environments of one function."""

    def __init__(self, config: FunctionConfig, *, cwd: Path) -> None:
        self.config = config
        self._cwd = cwd
        self._idle: list[LocalEnvironment] = []
        self._slots = asyncio.Semaphore(config.max_environments)
        self._all: set[LocalEnvironment] = set()
        self.cold_starts = 0

    async def prestart(self, count: int = 1) -> list[LocalEnvironment]:
        started = await asyncio.gather(
            *(self._start() for _ in range(min(count, self.config.max_environments)))
        )
        self._idle.extend(started)
        return started

    async def invoke(
        self, event: Any, *, request_id: str | None = None, wait: bool = True
    ) -> Invocation:
        """Run `event` in an idle environment, or a new one. With every environment busy,
        wait for one; or, with `wait=False`, refuse at once (Lambda's throttle)."""
        request_id = request_id or str(uuid.uuid4())
        if not wait and self._slots.locked():
            raise AtConcurrencyLimit(
                f"{self.config.name}: all {self.config.max_environments} environment(s) busy"
            )
        async with self._slots:
            try:
                return await self._invoke_once(event, request_id)
            except NeverDelivered:
                # The idle environment died before the event reached it (killed, out of
                # memory): Lambda would have routed the event elsewhere, so do the same.
                return await self._invoke_once(event, request_id)

    async def _invoke_once(self, event: Any, request_id: str) -> Invocation:
        environment = self._take_idle()
        cold = environment is None
        if environment is None:
            environment = await self._start()
        started = time.perf_counter()
        try:
            result = await environment.invoke(event, request_id)
        finally:
            if environment.alive:
                self._idle.append(environment)
            else:
                self._all.discard(environment)
        return Invocation(
            result=result,
            cold_start=cold,
            init_ms=environment.init_ms if cold else None,
            duration_ms=(time.perf_counter() - started) * 1000,
        )

    def _take_idle(self) -> LocalEnvironment | None:
        # An environment that died while idle (killed, out of memory) is simply gone, as
        # on Lambda: the request goes to another one or to a cold start.
        while self._idle:
            environment = self._idle.pop()
            if environment.alive:
                return environment
            self._all.discard(environment)
        return None

    async def close(self) -> None:
        await asyncio.gather(*(environment.stop() for environment in self._all))
        self._all.clear()
        self._idle.clear()

    async def _start(self) -> LocalEnvironment:
        environment = LocalEnvironment(self.config, cwd=self._cwd)
        self._all.add(environment)
        try:
            await environment.start()
        except BaseException:
            self._all.discard(environment)
            raise
        self.cold_starts += 1
        return environment


async def close_all(pools: dict[str, FunctionPool]) -> None:
    with contextlib.suppress(Exception):
        await asyncio.gather(*(pool.close() for pool in pools.values()))
