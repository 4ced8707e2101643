"""A job: its record, its statuses and the message that carries it through SQS.

Statuses only move forward (queued -> running -> succeeded | failed, or queued ->
cancelled); the job store enforces that with conditional writes. The one way back is an
operator's redrive of a failed job (`stratoserve jobs redrive`).
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})

BACKEND_LAMBDA = "lambda"
"""The CPU worker (a Lambda function on AWS, a local environment under `stratoserve dev`)."""
BACKEND_MODAL = "modal"
"""The GPU layer: the Modal app in gpu_jobs/ (the local GPU executor under `stratoserve dev`)."""

# Idempotency keys name jobs: the same key from the same tenant is the same job id, so one
# conditional write both creates the job and claims the key.
_IDEMPOTENCY_NAMESPACE = uuid.UUID("5b0d1c64-52b9-4a43-9a51-6f4f0a3a1f9e")


def new_job_id(tenant: str, idempotency_key: str | None) -> str:
    if idempotency_key is None:
        return str(uuid.uuid4())
    return str(uuid.uuid5(_IDEMPOTENCY_NAMESPACE, f"{tenant}\n{idempotency_key}"))


def request_hash(model: str, version: str, inputs_json: bytes, callback_url: str | None) -> str:
    """What an idempotent replay must match: the same key with another request is refused."""
    digest = hashlib.sha256()
    for part in (model.encode(), version.encode(), (callback_url or "").encode(), inputs_json):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


@dataclass(frozen=True)
class Job:
    tenant: str
    """The tenant's immutable id (functions/runtime/tenants.py), never its name: a name
    re-issued to someone else finds none of the old jobs."""
    job_id: str
    status: JobStatus
    model: str
    version: str
    api_version: str
    inputs: int
    """How many inputs the job carries."""
    correlation_id: str
    created_at: float
    updated_at: float
    expires_at: int
    request_hash: str
    backend: str = BACKEND_LAMBDA
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    lease_until: float | None = None
    """While running: when the attempt's message becomes visible again (its lease ends)."""
    error: str | None = None
    """Why it failed; while running, why the last attempt failed (it will be retried)."""
    result: str | None = None
    """The result as JSON text, when it is small enough to live in the record."""
    result_key: str | None = None
    """Else: where in the results bucket it is."""
    result_bytes: int | None = None
    callback_url: str | None = None
    callback: dict[str, Any] | None = None
    """How the callback went: delivered or not, attempts, last status or error."""
    redrives: int = 0
    gpu_call_id: str | None = None
    """The GPU layer's call running the job (Modal's FunctionCall id)."""
    dispatched_at: float | None = None
    follow_up: str | None = None
    """The token of the one message that follows the call now: a follow-up whose token is
    not this one (a duplicate, a leftover) is dropped, so following never forks."""
    fallback: str | None = None
    """Why a job routed to the GPU ran on the CPU worker instead."""
    message_id: str | None = None
    """The SQS id of the job's message, recorded once it is sent: a replay of the job
    sends nothing more. A queued job without one may have no message on the queue."""
    secret_version: int = 1
    """The version of the tenant's callback secret when the job was submitted: its callback
    is signed with that version's secret (a rotation does not break a job in flight)."""

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


class MalformedMessage(ValueError):
    """An SQS message that is not a stratoserve job (it can only end in the DLQ)."""


@dataclass(frozen=True)
class JobMessage:
    """The SQS message body: which job, and its inputs (or where they are, when large).

    Where the job runs is the job record's `backend`. Once the worker has dispatched a job
    to the GPU layer, the messages that ask about the running call carry its `call_id` and
    a `follow_up` token (see Job.follow_up)."""

    tenant: str
    job_id: str
    model: str
    version: str
    correlation_id: str
    inputs: list[Any] | None = None
    inputs_key: str | None = None
    call_id: str | None = None
    follow_up: str | None = None

    def encode(self) -> bytes:
        body: dict[str, Any] = {
            "tenant": self.tenant,
            "job_id": self.job_id,
            "model": self.model,
            "version": self.version,
            "correlation_id": self.correlation_id,
        }
        if self.call_id is not None:
            body["call_id"] = self.call_id
        if self.follow_up is not None:
            body["follow_up"] = self.follow_up
        if self.inputs_key is not None:
            body["inputs_key"] = self.inputs_key
        else:
            body["inputs"] = self.inputs
        return orjson.dumps(body)

    @classmethod
    def decode(cls, body: str) -> JobMessage:
        try:
            raw = orjson.loads(body)
        except orjson.JSONDecodeError as error:
            raise MalformedMessage(f"the message body is not JSON: {error}") from None
        if not isinstance(raw, dict):
            raise MalformedMessage("the message body is not a JSON object")
        missing = [
            name
            for name in ("tenant", "job_id", "model", "version")
            if not isinstance(raw.get(name), str)
        ]
        if missing:
            raise MalformedMessage(f"the message lacks {', '.join(missing)}")
        inputs, inputs_key = raw.get("inputs"), raw.get("inputs_key")
        if not isinstance(inputs, list) and not isinstance(inputs_key, str):
            raise MalformedMessage("the message has neither inputs nor inputs_key")
        call_id, follow_up = raw.get("call_id"), raw.get("follow_up")
        if not all(value is None or isinstance(value, str) for value in (call_id, follow_up)):
            raise MalformedMessage("call_id and follow_up must be strings")
        return cls(
            tenant=raw["tenant"],
            job_id=raw["job_id"],
            model=raw["model"],
            version=raw["version"],
            correlation_id=str(raw.get("correlation_id") or raw["job_id"]),
            inputs=inputs if isinstance(inputs, list) else None,
            inputs_key=inputs_key if isinstance(inputs_key, str) else None,
            call_id=call_id,
            follow_up=follow_up,
        )
