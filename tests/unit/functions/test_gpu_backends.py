"""How the worker reads the GPU layer's answers: Modal's exceptions sorted into a call's
own failure (the job falls back or fails) and trouble on the way to Modal (try again), and
the circuit breaker's states. Modal's real exception classes, raised where `get` would."""

from __future__ import annotations

from typing import Any

import pytest
from modal import exception as modal_errors

from functions.runtime.gpu import (
    REASON_MAX,
    CallState,
    CircuitBreaker,
    GpuRefused,
    GpuUnavailable,
    ModalBackend,
)


class _Call:
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def get(self, timeout: float | None = None) -> Any:
        raise self.error


def _status(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> Any:
    import modal

    monkeypatch.setattr(modal.FunctionCall, "from_id", lambda call_id, client=None: _Call(error))
    return ModalBackend("stratoserve-gpu").status("fc-1")


@pytest.mark.parametrize(
    ("error", "state"),
    [
        (modal_errors.TimeoutError("not yet"), CallState.PENDING),
        (TimeoutError(), CallState.PENDING),
        (modal_errors.OutputExpiredError("gone"), CallState.UNKNOWN),
        (modal_errors.NotFoundError("no such call"), CallState.UNKNOWN),
        (modal_errors.FunctionTimeoutError("900 s"), CallState.FAILED),
        (modal_errors.RemoteError("terminated"), CallState.FAILED),
        (ValueError("inputs[3]: text is empty"), CallState.FAILED),  # the function's own
    ],
)
def test_a_call_s_own_outcome_is_its_state(
    monkeypatch: pytest.MonkeyPatch, error: BaseException, state: CallState
) -> None:
    assert _status(monkeypatch, error).state == state


@pytest.mark.parametrize(
    "error",
    [
        modal_errors.ServiceError("unavailable"),
        modal_errors.ResourceExhaustedError("rate limited"),
        modal_errors.InternalError("oops"),
        modal_errors.ConnectionError("reset"),
        ConnectionResetError("reset by peer"),
    ],
)
def test_trouble_reaching_modal_is_worth_another_try(
    monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    with pytest.raises(GpuUnavailable, match=r"^Modal poll failed"):
        _status(monkeypatch, error)


def test_a_refused_token_is_a_refusal_and_forgets_the_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import modal

    tokens = iter([("id-1", "secret-1"), ("id-2", "secret-2")])
    made: list[str] = []
    monkeypatch.setattr(
        modal.Client, "from_credentials", lambda token_id, secret: made.append(token_id) or object()
    )
    monkeypatch.setattr(
        modal.FunctionCall,
        "from_id",
        lambda call_id, client=None: _Call(modal_errors.AuthError("token revoked")),
    )
    backend = ModalBackend("stratoserve-gpu", credentials=lambda: next(tokens))

    for _ in range(2):
        with pytest.raises(GpuRefused, match=r"^Modal refused the poll \(AuthError\)"):
            backend.status("fc-1")

    assert made == ["id-1", "id-2"]  # the secret is read again after a refusal


def test_a_remote_traceback_keeps_its_first_line_only(monkeypatch: pytest.MonkeyPatch) -> None:
    error = RuntimeError("CUDA out of memory\nTraceback (most recent call last):\n  File ...")

    status = _status(monkeypatch, error)

    assert status.error == "RuntimeError: CUDA out of memory"
    long = _status(monkeypatch, RuntimeError("x" * 1000))
    assert len(long.error) == REASON_MAX


def test_the_breaker_opens_after_consecutive_failures_then_allows_one_trial() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failures=3, reset_s=10, clock=lambda: now[0])

    breaker.failed()
    breaker.failed()
    closed_before = breaker.allow()
    breaker.failed()
    opened = breaker.allow()
    now[0] += 10
    trial = breaker.allow()
    breaker.failed()  # the trial failed: open again
    reopened = breaker.allow()
    now[0] += 10
    breaker.succeeded()

    assert (closed_before, opened, trial, reopened) == (True, False, True, False)
    assert breaker.allow()
