"""What the API answers, typed: a prediction, a job's state. Parsing is shared by the sync
and async clients."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stratoserve.client.errors import (
    JobCancelledError,
    JobFailedError,
    StratoserveError,
    error_for,
)

FINISHED = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: str


@dataclass(frozen=True)
class Prediction:
    outputs: list[Any]
    model: ModelRef
    api_version: str
    request_id: str | None = None
    deprecation: dict[str, Any] | None = None
    """Set when the API version is deprecated: its sunset and successor."""


@dataclass(frozen=True)
class JobState:
    job_id: str
    status: str
    """queued, running, succeeded, failed or cancelled."""
    backend: str | None = None
    """lambda (the CPU worker) or modal (the GPU layer)."""
    model: ModelRef | None = None
    error: str | None = None
    """Why a failed job failed."""
    fallback: str | None = None
    """Why a job routed to the GPU layer ran on the CPU worker instead (it still succeeds)."""
    result: Any = None
    """The result as answered: {"outputs": [...]} inline, or {"url": ..., "bytes": ...}."""
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


def decode(status: int, body: Any, ok: tuple[int, ...] = (200,)) -> Any:
    """The body of a successful answer; the typed error otherwise."""
    if status not in ok:
        raise error_for(status, body)
    return body


def prediction(body: dict[str, Any], request_id: str | None) -> Prediction:
    return Prediction(
        outputs=body["outputs"],
        model=ModelRef(**body["model"]),
        api_version=body["api_version"],
        request_id=request_id,
        deprecation=body.get("deprecation"),
    )


def job_state(body: dict[str, Any]) -> JobState:
    model = body.get("model")
    return JobState(
        job_id=body["job_id"],
        status=body["status"],
        backend=body.get("backend"),
        model=ModelRef(**model) if isinstance(model, dict) else None,
        error=body.get("error"),
        fallback=body.get("fallback"),
        result=body.get("result"),
        raw=body,
    )


def submission(
    model: str, inputs: list[Any], callback_url: str | None, idempotency_key: str | None
) -> tuple[dict[str, Any], dict[str, str] | None]:
    """POST /{v}/jobs: its body and headers."""
    request: dict[str, Any] = {"model": model, "inputs": inputs}
    if callback_url:
        request["callback_url"] = callback_url
    return request, ({"idempotency-key": idempotency_key} if idempotency_key else None)


def result_url(state: JobState) -> str | None:
    """Where a finished job's result is, when it is not inline (a presigned URL); a failed
    job raises its reason, a cancelled one JobCancelledError."""
    if state.status == "failed":
        raise JobFailedError(200, state.error or "the job failed", state.raw)
    if state.status == "cancelled":
        raise JobCancelledError(200, f"job {state.job_id} was cancelled", state.raw)
    result = state.result or {}
    return result.get("url") if isinstance(result, dict) else None


def job_prediction(state: JobState, result: Any, api_version: str) -> Prediction:
    assert state.model is not None
    return Prediction(outputs=result["outputs"], model=state.model, api_version=api_version)


def parse_json(content: bytes) -> Any:
    import json

    try:
        return json.loads(content) if content else None
    except ValueError:
        return content.decode(errors="replace")


def backoff(attempt: int, first_s: float, most_s: float) -> float:
    """Poll delays: first_s, doubling, capped at most_s."""
    return float(min(most_s, first_s * 2**attempt))


__all__ = ["JobState", "ModelRef", "Prediction", "StratoserveError"]
