"""The GPU layer as the worker sees it: spawn a call, ask how it is going, cancel it.

Two backends speak that interface: Modal (the deployed gpu_jobs app, on AWS) and the local
GPU executor that `stratoserve dev` runs (the same class's code on this machine). The
worker never waits on a call: it spawns it, stores the call id on the job, and asks again
later (functions/worker/gpu.py).

Errors come in two kinds: GpuUnavailable (the layer could not be reached or answered 5xx:
worth another try, and counted by the circuit breaker) and GpuRefused (it answered no:
not deployed, bad credentials, a model it does not serve; trying again cannot help).
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

RUN_JOB = "run_job"
"""The gpu_jobs app's function that the worker spawns, one call per job."""


class GpuUnavailable(Exception):
    """The GPU layer could not be reached, or failed to answer: try again later."""


class GpuRefused(Exception):
    """The GPU layer refused the request: another try cannot succeed."""


class CallState(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"
    """The layer has no such call (expired, or the executor restarted)."""


@dataclass(frozen=True)
class CallStatus:
    state: CallState
    outputs: list[Any] | None = None
    error: str | None = None


REASON_MAX = 300
"""A reason from the GPU layer, as a job keeps it: its first line, at most this long (a
remote traceback stays in the logs)."""


def short(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= REASON_MAX else line[: REASON_MAX - 1] + "…"


def _request(model: str, version: str, inputs: list[Any], correlation_id: str) -> dict[str, Any]:
    """What a call of the GPU layer's run_job gets: one job."""
    return {"model": model, "version": version, "inputs": inputs, "correlation_id": correlation_id}


class GpuBackend(Protocol):
    name: str

    def spawn(self, model: str, version: str, inputs: list[Any], correlation_id: str) -> str:
        """Start a call that runs the inputs; its id."""
        ...

    def status(self, call_id: str) -> CallStatus: ...

    def cancel(self, call_id: str) -> None: ...


class LocalExecutorBackend:
    """The local GPU executor of `stratoserve dev`, over HTTP on the loopback."""

    name = "local GPU executor"

    def __init__(self, url: str, *, token: str = "", timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self.timeout_s = timeout_s

    def spawn(self, model: str, version: str, inputs: list[Any], correlation_id: str) -> str:
        request = _request(model, version, inputs, correlation_id)
        answer = self._call("POST", "/calls", request)
        return str(answer["call_id"])

    def status(self, call_id: str) -> CallStatus:
        try:
            answer = self._call("GET", f"/calls/{call_id}")
        except _NotFound as missing:
            return CallStatus(CallState.UNKNOWN, error=str(missing))
        state = CallState(answer["status"])
        error = answer.get("error")
        return CallStatus(
            state, outputs=answer.get("outputs"), error=short(error) if error else None
        )

    def cancel(self, call_id: str) -> None:
        with contextlib.suppress(_NotFound):  # gone already: nothing to cancel
            self._call("DELETE", f"/calls/{call_id}")

    def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        # The executor answers only the stack's token (stratoserve/local/loopback.py).
        headers = {"content-type": "application/json"}
        if self._token:
            headers["authorization"] = f"Bearer {self._token}"
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with _DIRECT.open(request, timeout=self.timeout_s) as response:
                answer: dict[str, Any] = json.loads(response.read())
                return answer
        except urllib.error.HTTPError as error:
            message = _error_message(error)
            if error.code == 404:
                raise _NotFound(message) from None
            if error.code >= 500:
                raise GpuUnavailable(f"{self.name} answered {error.code}: {message}") from None
            raise GpuRefused(f"{self.name} refused the call ({error.code}): {message}") from None
        except (OSError, ValueError) as error:  # refused, reset, timed out; or not JSON
            raise GpuUnavailable(f"{self.name} unreachable at {self.url}: {error}") from None


class _NotFound(GpuRefused):
    pass


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""The executor is on the loopback: never through an HTTP(S)_PROXY of the environment."""


def _error_message(error: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(error.read()).get("error", error.reason))
    except (ValueError, AttributeError, OSError):
        return str(error.reason)


class ModalBackend:
    """The deployed gpu_jobs app on Modal. The token comes from `credentials` (Secrets
    Manager on AWS), or from Modal's own configuration (MODAL_TOKEN_ID/SECRET)."""

    name = "Modal"

    def __init__(
        self, app: str, *, credentials: Callable[[], tuple[str, str]] | None = None
    ) -> None:
        self.app = app
        self._credentials = credentials
        self._client: Any = None
        self._function: Any = None

    def spawn(self, model: str, version: str, inputs: list[Any], correlation_id: str) -> str:
        request = _request(model, version, inputs, correlation_id)
        client = self._modal_client()
        with self._modal_errors("spawn"):
            if self._function is None:
                import modal

                self._function = modal.Function.from_name(self.app, RUN_JOB, client=client)
            call = self._function.spawn(request)
        return str(call.object_id)

    def status(self, call_id: str) -> CallStatus:
        client = self._modal_client()
        with self._modal_errors("poll"):
            import modal
            from modal import exception as modal_errors

            call = modal.FunctionCall.from_id(call_id, client=client)
            try:
                result = call.get(timeout=0)
            except modal_errors.OutputExpiredError:
                return CallStatus(CallState.UNKNOWN, error="the call's output expired")
            except modal_errors.FunctionTimeoutError as error:
                return CallStatus(CallState.FAILED, error=short(f"FunctionTimeoutError: {error}"))
            except (TimeoutError, modal_errors.TimeoutError):  # no output yet
                return CallStatus(CallState.PENDING)
            except modal_errors.NotFoundError as error:
                return CallStatus(CallState.UNKNOWN, error=short(str(error)))
            except Exception as error:
                if not _raised_by_the_call(error):
                    raise  # Modal itself, or the way to it: _modal_errors sorts it out
                return CallStatus(CallState.FAILED, error=short(f"{type(error).__name__}: {error}"))
        return CallStatus(CallState.SUCCEEDED, outputs=list(result["outputs"]))

    def cancel(self, call_id: str) -> None:
        client = self._modal_client()
        with self._modal_errors("cancel"):
            import modal

            modal.FunctionCall.from_id(call_id, client=client).cancel()

    def _modal_client(self) -> Any:
        """A client for the token from `credentials` (None: Modal's own configuration)."""
        if self._client is None and self._credentials is not None:
            token_id, token_secret = self._credentials()
            with self._modal_errors("login"):
                import modal

                self._client = modal.Client.from_credentials(token_id, token_secret)
        return self._client

    @contextlib.contextmanager
    def _modal_errors(self, action: str) -> Iterator[None]:
        """Modal's exceptions as the two kinds the worker knows. A refused token drops the
        cached client, so a rotated secret is read again on the next call."""
        try:
            yield
        except (GpuUnavailable, GpuRefused):
            raise
        except ImportError as error:
            raise GpuRefused(f"the modal package is not installed here ({error.name})") from None
        except Exception as error:
            from modal import exception as modal_errors

            name = type(error).__name__
            if isinstance(error, modal_errors.AuthError):
                self._client = self._function = None
            refused = (
                modal_errors.AuthError,
                modal_errors.NotFoundError,
                modal_errors.InvalidError,
                modal_errors.PermissionDeniedError,
                modal_errors.RequestSizeError,
            )
            if isinstance(error, refused):
                raise GpuRefused(short(f"Modal refused the {action} ({name}): {error}")) from None
            raise GpuUnavailable(short(f"Modal {action} failed ({name}): {error}")) from None


def _raised_by_the_call(error: Exception) -> bool:
    """Whether `get` re-raised the call's own failure (the function's exception, rebuilt
    here, or Modal's word that the call died), rather than failing to ask."""
    import grpclib
    from modal import exception as modal_errors

    of_the_call = (
        modal_errors.RemoteError,
        modal_errors.InternalFailure,
        modal_errors.ExecutionError,
        modal_errors.DeserializationError,
    )
    if isinstance(error, of_the_call):
        return True
    return not isinstance(error, modal_errors.Error | grpclib.GRPCError | OSError)


class CircuitBreaker:
    """Stops calling a layer that keeps failing: after `failures` consecutive failures it
    opens for `reset_s`, then lets one trial call through (half-open); a success closes it.

    Per execution environment (a Lambda worker's memory): each environment learns on its
    own that the layer is down, after a few failures."""

    def __init__(
        self, *, failures: int, reset_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.failures = failures
        self.reset_s = reset_s
        self._clock = clock
        self._consecutive = 0
        self._opened_at: float | None = None

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None and self._clock() - self._opened_at < self.reset_s

    def allow(self) -> bool:
        """Whether to try a call now (closed, or open long enough for a trial)."""
        return not self.is_open

    def succeeded(self) -> None:
        self._consecutive = 0
        self._opened_at = None

    def failed(self) -> None:
        self._consecutive += 1
        if self._consecutive >= self.failures:
            self._opened_at = self._clock()
