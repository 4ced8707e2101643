"""A job as the API shows it (GET /{v}/jobs/{id}) and as its callback delivers it."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import orjson

from functions.runtime.jobs import Job, JobStatus

if TYPE_CHECKING:
    from functions.runtime.job_store import JobStore

RESULT_URL_EXPIRES_S = 3600


def job_view(job: Job, store: JobStore, *, prefix: str = "") -> dict[str, Any]:
    """A job as the API shows it: the status, and the result once succeeded (in the answer,
    or behind a presigned URL when large)."""
    view: dict[str, Any] = {
        "job_id": job.job_id,
        "status": job.status,
        "backend": job.backend,
        "model": {"name": job.model, "version": job.version},
        "api_version": job.api_version,
        "inputs": job.inputs,
        "attempts": job.attempts,
        "created_at": _timestamp(job.created_at),
        "status_url": f"{prefix}/{job.api_version}/jobs/{job.job_id}",
    }
    if job.started_at is not None:
        view["started_at"] = _timestamp(job.started_at)
    if job.finished_at is not None:
        view["finished_at"] = _timestamp(job.finished_at)
    if job.status == JobStatus.SUCCEEDED:
        if job.result is not None:
            view["result"] = orjson.Fragment(job.result)
        elif job.result_key is not None:
            view["result"] = {
                "url": store.result_url(job, RESULT_URL_EXPIRES_S),
                "bytes": job.result_bytes,
                "expires_in_s": RESULT_URL_EXPIRES_S,
            }
    if job.error is not None:
        # While running, the reason the last attempt failed (it will be retried).
        view["error" if job.status == JobStatus.FAILED else "last_error"] = job.error
    if job.fallback is not None:
        # Routed to the GPU, run on the CPU worker: why.
        view["fallback"] = job.fallback
    if job.callback_url is not None:
        view["callback"] = {"url": job.callback_url, **(job.callback or {"delivered": False})}
    return view


def _timestamp(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="milliseconds")
