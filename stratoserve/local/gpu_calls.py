"""The local GPU executor's calls and their running (served over HTTP by gpu_executor.py).

Executor runs each call through the gpu_jobs class's real code:
`gpu_jobs.app.Model(model=..., version=...).predict.local(batch)`, a length-sorted batch at
a time (gpu_jobs.engine), so the @modal.enter hooks load the model as in a container. It
uses CUDA when this machine's onnxruntime has it, the CPU otherwise. Faults inject failures
and hangs into calls; CallStore keeps the calls.

Calls run one at a time on a background thread (one GPU); finished calls are kept for an
hour, and only so many (and so many bytes) of them.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from stratoserve.declaration import Declaration

KEEP_S = 3600.0
"""A call is forgotten (then 404) this long after it was submitted, unless still running."""
KEEP_CALLS = 1000
"""...and finished calls beyond this many, oldest first."""
KEEP_BYTES = 512 << 20
"""...and beyond this many bytes of kept answers (2,000 vectors of 384 floats: ~8 MB)."""

logger = logging.getLogger("stratoserve.gpu_executor")


class ExecutorError(Exception):
    """The executor cannot start or answer; the message says why and what to do."""


class InjectedFault(Exception):  # named for what callers read: "InjectedFault: ..."
    """A failure the fault settings asked for."""


class _Cancelled(Exception):
    pass


# --- fault injection ---------------------------------------------------------------------


@dataclass(frozen=True)
class Faults:
    error: float = 0.0
    """Probability that a call fails with InjectedFault."""
    hang: float = 0.0
    """Probability that a call never finishes (until it is cancelled)."""

    @classmethod
    def parse(cls, text: str) -> Faults:
        """From "error=0.5,hang=0.1" (as in STRATOSERVE_GPU_FAULTS)."""
        values: dict[str, Any] = {}
        for part in filter(None, (piece.strip() for piece in text.split(","))):
            name, equals, value = part.partition("=")
            if not equals:
                raise ValueError(f"{part!r}: expected name=probability, e.g. error=0.5")
            try:
                values[name.strip()] = float(value)
            except ValueError:
                raise ValueError(f"{name.strip()}: {value.strip()!r} is not a number") from None
        return cls.from_json(values)

    @classmethod
    def from_json(cls, body: Any) -> Faults:
        if not isinstance(body, dict):
            raise ValueError('expected an object like {"error": 0.5, "hang": 0.1}')
        unknown = sorted(set(body) - {"error", "hang"})
        if unknown:
            raise ValueError(f"unknown fault {unknown[0]!r} (known: error, hang)")
        for name, value in body.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name}: must be a number from 0 to 1")
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}: must be from 0 to 1, got {value}")
        return cls(error=float(body.get("error", 0.0)), hang=float(body.get("hang", 0.0)))

    def as_dict(self) -> dict[str, float]:
        return {"error": self.error, "hang": self.hang}


# --- calls -------------------------------------------------------------------------------


@dataclass
class Call:
    call_id: str
    model: str
    version: str
    inputs: list[Any] | None
    fault: str | None = None
    submitted: float = field(default_factory=time.monotonic)
    answer: dict[str, Any] = field(default_factory=lambda: {"status": "pending"})
    body: bytes | None = None
    """The finished answer as JSON, kept instead of the outputs (far smaller)."""
    running: bool = False
    cancel: threading.Event = field(default_factory=threading.Event)

    @property
    def finished(self) -> bool:
        return bool(self.answer["status"] != "pending")


def dump_json(value: Any) -> bytes:
    import orjson

    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


class CallStore:
    """The calls this executor knows, bounded by age, count and bytes."""

    def __init__(
        self, *, keep_s: float = KEEP_S, keep_calls: int = KEEP_CALLS, keep_bytes: int = KEEP_BYTES
    ) -> None:
        self._calls: OrderedDict[str, Call] = OrderedDict()
        self._lock = threading.Lock()
        self._kept_bytes = 0
        self.keep_s, self.keep_calls, self.keep_bytes = keep_s, keep_calls, keep_bytes

    def add(self, call: Call) -> None:
        with self._lock:
            self._calls[call.call_id] = call
            self._evict()

    def get(self, call_id: str) -> Call | None:
        with self._lock:
            self._evict()
            return self._calls.get(call_id)

    def finish(self, call: Call, answer: dict[str, Any]) -> bool:
        """Record a call's end, unless it was cancelled (or forgotten) meanwhile."""
        body = dump_json(answer)
        with self._lock:
            call.running = False
            call.inputs = None
            if call.finished or self._calls.get(call.call_id) is not call:
                return False
            call.answer = {"status": answer["status"]}
            call.body = body
            self._kept_bytes += len(body)
            self._evict()
            return True

    def cancel(self, call_id: str) -> Call | None:
        with self._lock:
            call = self._calls.get(call_id)
            if call is not None and not call.finished:
                call.cancel.set()
                call.answer = {"status": "cancelled"}
                if not call.running:  # a running call stops at its next batch
                    call.inputs = None
            return call

    def start(self, call: Call) -> bool:
        """Mark a queued call running; False when it was cancelled or forgotten meanwhile."""
        with self._lock:
            if call.finished or call.cancel.is_set():
                return False
            call.running = True
            return True

    def pending(self) -> int:
        with self._lock:
            return sum(not call.finished for call in self._calls.values())

    def _evict(self) -> None:
        now = time.monotonic()
        finished = [call for call in self._calls.values() if call.finished]
        excess = len(finished) - self.keep_calls
        for call in list(self._calls.values()):  # oldest first
            too_old = now - call.submitted > self.keep_s and not call.running
            over = call.finished and (excess > 0 or self._kept_bytes > self.keep_bytes)
            if too_old or over:
                if call.finished:
                    excess -= 1
                self._forget(call)

    def _forget(self, call: Call) -> None:
        del self._calls[call.call_id]
        self._kept_bytes -= len(call.body or b"")
        call.cancel.set()


# --- the executor ------------------------------------------------------------------------


class Executor:
    """Runs calls on one background thread through the gpu_jobs Model class."""

    def __init__(self, declaration: Declaration, source: Path, *, faults: Faults | None = None):
        from gpu_jobs import engine

        if declaration.gpu is None:
            raise ExecutorError(f"{source}: no [gpu] table, so there is no GPU layer to run")
        self.declaration = declaration
        self.source = source
        self.served = engine.served(declaration)
        self.max_batch_size = declaration.gpu.max_batch_size
        self.faults = faults or Faults()
        self.calls = CallStore()
        self._queue: queue.SimpleQueue[Call] = queue.SimpleQueue()
        self._instances: dict[tuple[str, str], Any] = {}
        self._providers: dict[str, str] = {}
        self._preferred: str | None = None
        self._thread = threading.Thread(target=self._work, name="gpu-executor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def models(self) -> list[str]:
        return [
            f"{model}:{version}" for model, versions in self.served.items() for version in versions
        ]

    def submit(self, model: str, version: str, inputs: list[Any]) -> Call:
        from gpu_jobs import engine

        engine.check_served(self.declaration, model, version)
        faults = self.faults
        fault = (
            "hang"
            if random.random() < faults.hang
            else "error"
            if random.random() < faults.error
            else None
        )
        call = Call(f"fc-{uuid.uuid4().hex}", model, version, inputs, fault=fault)
        self.calls.add(call)
        if fault != "hang":  # a hung call is never run: it stays pending until cancelled
            self._queue.put(call)
        return call

    def health(self) -> dict[str, Any]:
        return {
            "ok": True,
            "app": self.declaration.gpu.app if self.declaration.gpu else None,
            "models": self.models,
            "provider": self.provider,
            "loaded": dict(self._providers),
            "pending": self.calls.pending(),
            "faults": self.faults.as_dict(),
        }

    @property
    def provider(self) -> str:
        """The provider loaded models really use; before any has loaded, the one asked for."""
        if self._providers:
            return next(iter(self._providers.values()))
        if self._preferred is None:
            from gpu_jobs import engine

            self._preferred = engine.providers()[0]
        return self._preferred

    def warm(self) -> None:
        """Load every served version now, as Modal's min_containers keep containers up."""
        for model, versions in self.served.items():
            for version in versions:
                self._instance(model, version).predict.local([])

    def _work(self) -> None:
        if self.declaration.gpu and self.declaration.gpu.min_containers > 0:
            try:
                self.warm()
            except Exception:
                logger.exception("local GPU executor: warming the models failed")
        while True:
            call = self._queue.get()
            if self.calls.start(call):
                self._run(call)

    def _run(self, call: Call) -> None:
        from gpu_jobs import engine

        inputs = call.inputs
        assert inputs is not None  # a started call keeps its inputs until it finishes
        try:
            if call.fault == "error":
                raise InjectedFault(
                    f"the local GPU executor failed this call on purpose (faults: "
                    f"error={self.faults.error})"
                )
            engine.check_inputs(self.declaration, call.model, inputs)
            instance = self._instance(call.model, call.version)

            def predict(batch: list[Any]) -> list[Any]:
                if call.cancel.is_set():
                    raise _Cancelled
                outputs: list[Any] = instance.predict.local(batch)
                return outputs

            request = {"model": call.model, "version": call.version, "inputs": inputs}
            result = engine.run_job(request, predict, self.max_batch_size)
            self._providers.setdefault(f"{call.model}:{call.version}", instance.engine.provider)
            answer = {"status": "succeeded", "outputs": result["outputs"]}
        except _Cancelled:
            self.calls.finish(call, {"status": "cancelled"})
            return
        except Exception as error:
            answer = {"status": "failed", "error": f"{type(error).__name__}: {error}"}
        self.calls.finish(call, answer)

    def _instance(self, model: str, version: str) -> Any:
        """One Model instance per (model, version): its enter hooks run on its first call,
        as in a fresh container, and it stays loaded."""
        key = (model, version)
        if key not in self._instances:
            from gpu_jobs.app import model_instance

            self._instances[key] = model_instance(model, version)
        return self._instances[key]
