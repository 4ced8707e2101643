"""Submitting a job against a real moto server: the record first, then the message; an
Idempotency-Key claims its job once; a refusal by AWS is a JobsUnavailable with the reason."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from functions.runtime.job_queue import CORRELATION_ATTRIBUTE, JobQueue
from functions.runtime.job_service import (
    INLINE_INPUTS_MAX_BYTES,
    RESEND_AFTER_S,
    IdempotencyConflict,
    JobService,
    JobsUnavailable,
)
from functions.runtime.job_store import JobStore
from functions.runtime.jobs import JobMessage, JobStatus
from stratoserve.jobs import create_job_resources
from stratoserve.local.aws import LocalAws, client
from tests.integration.stratoserve.moto import drain, reset_moto

if TYPE_CHECKING:
    from collections.abc import Iterator

    from stratoserve.declaration import Declaration
    from stratoserve.jobs import JobResources

TTL_DAYS = 7
NOW = time.time()


@dataclass(frozen=True)
class Aws:
    resources: JobResources
    dynamodb: Any
    s3: Any
    sqs: Any

    def store(self, table: str | None = None) -> JobStore:
        return JobStore(
            table=table or self.resources.table,
            bucket=self.resources.bucket,
            dynamodb=self.dynamodb,
            s3=self.s3,
            ttl_days=TTL_DAYS,
            result_inline_max_bytes=1024,
            max_receive_count=5,
            clock=lambda: NOW,
        )

    def service(
        self, *, table: str | None = None, queue_url: str | None = None, now: float = NOW
    ) -> JobService:
        """The service as of `now` (the store keeps NOW: nothing expires meanwhile)."""
        queue = JobQueue(queue_url=queue_url or self.resources.queue_url, sqs=self.sqs)
        return JobService(store=self.store(table), queue=queue, clock=lambda: now)

    def drain(self) -> list[dict[str, Any]]:
        """Every message on the jobs queue, removed from it."""
        return drain(self.sqs, self.resources.queue_url)


@pytest.fixture(scope="module")
def aws(declaration: Declaration) -> Iterator[Aws]:
    local = LocalAws()
    url = local.start()
    try:
        resources = create_job_resources(declaration, lambda service: client(service, url))
        yield Aws(resources, client("dynamodb", url), client("s3", url), client("sqs", url))
    finally:
        reset_moto(url)  # moto keeps its state per process, across server instances
        local.stop()


@pytest.fixture(autouse=True)
def empty_queue(aws: Aws) -> None:
    aws.drain()


@pytest.fixture
def tenant() -> str:
    return f"tenant-{uuid.uuid4().hex[:8]}"


def _submit(service: JobService, tenant: str, inputs: list[Any], **options: Any) -> Any:
    return service.submit(
        tenant=tenant,
        api_version="v2",
        model="embed",
        version="2",
        inputs=inputs,
        correlation_id=options.pop("correlation_id", "req-1"),
        **options,
    )


def test_a_submitted_job_is_stored_queued_and_its_message_sent(aws: Aws, tenant: str) -> None:
    service = aws.service()

    submission = _submit(
        service, tenant, ["a", "b"], correlation_id="req-7", callback_url="https://x.test/h"
    )

    job = submission.job
    assert submission.replayed is False
    assert job.status == JobStatus.QUEUED
    assert (job.tenant, job.model, job.version, job.api_version) == (tenant, "embed", "2", "v2")
    assert (job.inputs, job.correlation_id, job.attempts) == (2, "req-7", 0)
    assert job.expires_at == int(NOW + TTL_DAYS * 86_400)
    assert aws.store().get(tenant, job.job_id) == job
    (message,) = aws.drain()
    assert JobMessage.decode(message["Body"]) == JobMessage(
        tenant=tenant,
        job_id=job.job_id,
        model="embed",
        version="2",
        correlation_id="req-7",
        inputs=["a", "b"],
    )
    assert message["MessageAttributes"][CORRELATION_ATTRIBUTE]["StringValue"] == "req-7"


def test_inputs_too_large_for_a_message_wait_in_the_bucket(aws: Aws, tenant: str) -> None:
    inputs = ["x" * 1000] * (INLINE_INPUTS_MAX_BYTES // 1000 + 1)

    job = _submit(aws.service(), tenant, inputs).job

    (message,) = aws.drain()
    decoded = JobMessage.decode(message["Body"])
    assert decoded.inputs is None
    assert decoded.inputs_key == f"inputs/{tenant}/{job.job_id}/{int(NOW * 1000)}.json"
    assert aws.store().inputs(decoded.inputs_key) == inputs
    assert len(message["Body"]) < 1024


def test_an_idempotent_replay_is_the_stored_job_and_sends_nothing(aws: Aws, tenant: str) -> None:
    service = aws.service()
    first = _submit(service, tenant, ["a"], idempotency_key="order-1")
    # Still fresh: its message is on the queue, waiting for a worker.
    later = aws.service(now=NOW + RESEND_AFTER_S - 1)

    replay = _submit(service, tenant, ["a"], idempotency_key="order-1", correlation_id="req-2")
    later_replay = _submit(later, tenant, ["a"], idempotency_key="order-1", correlation_id="req-3")

    assert replay.replayed is True and later_replay.replayed is True
    assert replay.job == later_replay.job == first.job
    assert len(aws.drain()) == 1


def test_a_replay_of_a_job_long_unclaimed_sends_its_message_again(aws: Aws, tenant: str) -> None:
    """The submitting invocation may have died between the record and the message: a job
    still queued, unclaimed, after RESEND_AFTER_S gets its message again on a replay."""
    inputs = ["x" * 1000] * (INLINE_INPUTS_MAX_BYTES // 1000 + 1)  # through the bucket
    first = _submit(aws.service(), tenant, inputs, idempotency_key="order-1")
    aws.drain()  # lost
    later = aws.service(now=NOW + RESEND_AFTER_S + 1)

    replay = _submit(later, tenant, inputs, idempotency_key="order-1", correlation_id="req-2")

    assert replay.replayed is True
    assert replay.job == first.job
    (message,) = aws.drain()
    decoded = JobMessage.decode(message["Body"])
    assert (decoded.job_id, decoded.correlation_id) == (first.job.job_id, "req-1")
    assert message["MessageAttributes"][CORRELATION_ATTRIBUTE]["StringValue"] == "req-1"
    # The stored job's object name (its creation time), not the replay's.
    assert decoded.inputs_key == f"inputs/{tenant}/{first.job.job_id}/{int(NOW * 1000)}.json"
    assert aws.store().inputs(decoded.inputs_key) == inputs


def test_a_replay_of_a_job_a_worker_claimed_sends_nothing(aws: Aws, tenant: str) -> None:
    first = _submit(aws.service(), tenant, ["a"], idempotency_key="order-1")
    aws.drain()
    assert aws.store().start(tenant, first.job.job_id, lease_s=60) is not None
    later = aws.service(now=NOW + RESEND_AFTER_S + 1)

    replay = _submit(later, tenant, ["a"], idempotency_key="order-1", correlation_id="req-2")

    assert replay.replayed is True
    assert (replay.job.status, replay.job.attempts) == (JobStatus.RUNNING, 1)
    assert aws.drain() == []


def test_a_key_reused_for_another_request_is_refused_naming_the_job(aws: Aws, tenant: str) -> None:
    service = aws.service()
    first = _submit(service, tenant, ["a"], idempotency_key="order-1")

    with pytest.raises(IdempotencyConflict, match=first.job.job_id):
        _submit(service, tenant, ["b"], idempotency_key="order-1")
    with pytest.raises(IdempotencyConflict):
        _submit(service, tenant, ["a"], idempotency_key="order-1", callback_url="https://x.test/h")
    assert len(aws.drain()) == 1


def test_a_store_that_refuses_the_job_is_unavailable_and_nothing_is_sent(
    aws: Aws, tenant: str
) -> None:
    service = aws.service(table="no-such-table")

    with pytest.raises(JobsUnavailable) as caught:
        _submit(service, tenant, ["a"])

    # AWS's code only: its messages name roles, accounts and ARNs (they go to the logs).
    assert str(caught.value) == (
        "the job store refused the job (AWS error ResourceNotFoundException)"
    )
    assert caught.value.retryable is True
    assert aws.drain() == []


def test_a_job_that_cannot_be_queued_is_failed_with_the_reason(aws: Aws, tenant: str) -> None:
    missing_queue = aws.resources.queue_url + "-missing"
    service = aws.service(queue_url=missing_queue)

    with pytest.raises(JobsUnavailable) as caught:
        _submit(service, tenant, ["a"], idempotency_key="order-1")

    assert str(caught.value) == (
        "the job could not be queued (AWS error AWS.SimpleQueueService.NonExistentQueue)"
    )
    (job,) = aws.store().jobs(tenant)
    assert (job.status, job.attempts) == (JobStatus.FAILED, 0)
    assert job.error == str(caught.value)


def test_a_retry_after_the_queue_refused_the_job_queues_it(aws: Aws, tenant: str) -> None:
    refused = aws.service(queue_url=aws.resources.queue_url + "-missing")
    with pytest.raises(JobsUnavailable):
        _submit(refused, tenant, ["a"], idempotency_key="order-1", correlation_id="req-1")

    retry = _submit(aws.service(), tenant, ["a"], idempotency_key="order-1", correlation_id="req-2")

    assert retry.replayed is True, "the same job as the first request's"
    assert (retry.job.status, retry.job.attempts, retry.job.error) == (JobStatus.QUEUED, 0, None)
    assert aws.store().get(tenant, retry.job.job_id) == retry.job
    (message,) = aws.drain()
    decoded = JobMessage.decode(message["Body"])
    assert (decoded.job_id, decoded.inputs) == (retry.job.job_id, ["a"])
    assert decoded.correlation_id == "req-1", "the job's own correlation id"
    assert _submit(aws.service(), tenant, ["a"], idempotency_key="order-1").replayed is True
    assert aws.drain() == [], "queued now: a replay sends nothing more"


def test_a_job_that_failed_for_another_reason_is_not_queued_again(aws: Aws, tenant: str) -> None:
    first = _submit(aws.service(), tenant, ["a"], idempotency_key="order-1")
    aws.drain()
    store = aws.store()
    store.start(tenant, first.job.job_id, lease_s=60)
    store.fail(tenant, first.job.job_id, "invalid inputs: inputs[0]: too long")

    replay = _submit(aws.service(), tenant, ["a"], idempotency_key="order-1")

    assert replay.replayed is True
    assert replay.job.status == JobStatus.FAILED
    assert aws.drain() == []
