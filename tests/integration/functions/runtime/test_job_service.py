"""Submitting a job against a real moto server: the record first, then the message; an
Idempotency-Key claims its job once; a refusal by AWS is a JobsUnavailable with the reason."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import EndpointConnectionError

from functions.runtime.job_queue import CORRELATION_ATTRIBUTE, JobQueue
from functions.runtime.job_service import (
    INLINE_INPUTS_MAX_BYTES,
    IdempotencyConflict,
    JobService,
    JobsUnavailable,
)
from functions.runtime.job_store import JobStore
from functions.runtime.jobs import Job, JobMessage, JobStatus
from stratoserve.jobs import create_job_resources
from stratoserve.local.aws import DUMMY_CREDENTIALS, LocalAws, client
from tests.integration.stratoserve.moto import drain, reset_moto

if TYPE_CHECKING:
    from collections.abc import Iterator

    from stratoserve.declaration import Declaration
    from stratoserve.jobs import JobResources

TTL_DAYS = 7
NOW = time.time()
UNREACHABLE = "http://127.0.0.1:9"
"""The discard port: nothing listens there, so a connection is refused at once."""


@dataclass(frozen=True)
class Aws:
    resources: JobResources
    dynamodb: Any
    s3: Any
    sqs: Any

    def store(self, table: str | None = None, kind: type[JobStore] = JobStore) -> JobStore:
        return kind(
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
    # However long it waits for a worker: its message is on the queue.
    later = aws.service(now=NOW + 3600)

    replay = _submit(service, tenant, ["a"], idempotency_key="order-1", correlation_id="req-2")
    later_replay = _submit(later, tenant, ["a"], idempotency_key="order-1", correlation_id="req-3")

    assert first.job.message_id is not None, "the message's id is recorded on the job"
    assert replay.replayed is True and later_replay.replayed is True
    assert replay.job == later_replay.job == first.job
    assert len(aws.drain()) == 1


def test_a_replay_of_a_job_with_no_message_id_sends_its_message(aws: Aws, tenant: str) -> None:
    """The submitting invocation died between the record and the message (or its answer
    was lost): a job queued, unclaimed, with no message id gets its message on a replay."""
    inputs = ["x" * 1000] * (INLINE_INPUTS_MAX_BYTES // 1000 + 1)  # through the bucket
    first = _submit(aws.service(), tenant, inputs, idempotency_key="order-1")
    aws.drain()  # as if never sent
    aws.dynamodb.update_item(
        TableName=aws.resources.table,
        Key={"tenant": {"S": tenant}, "job_id": {"S": first.job.job_id}},
        UpdateExpression="REMOVE message_id",
    )

    replay = _submit(aws.service(), tenant, inputs, idempotency_key="order-1", correlation_id="r2")

    assert replay.replayed is True
    assert replay.job.job_id == first.job.job_id
    (message,) = aws.drain()
    assert replay.job.message_id == message["MessageId"]
    decoded = JobMessage.decode(message["Body"])
    assert (decoded.job_id, decoded.correlation_id) == (first.job.job_id, "req-1")
    assert message["MessageAttributes"][CORRELATION_ATTRIBUTE]["StringValue"] == "req-1"
    # The stored job's object name (its creation time), not the replay's.
    assert decoded.inputs_key == f"inputs/{tenant}/{first.job.job_id}/{int(NOW * 1000)}.json"
    assert aws.store().inputs(decoded.inputs_key) == inputs
    assert _submit(aws.service(), tenant, inputs, idempotency_key="order-1").replayed is True
    assert aws.drain() == [], "its message id recorded now: a replay sends nothing more"


def test_a_replay_of_a_job_a_worker_claimed_sends_nothing(aws: Aws, tenant: str) -> None:
    first = _submit(aws.service(), tenant, ["a"], idempotency_key="order-1")
    aws.drain()
    assert aws.store().start(tenant, first.job.job_id, lease_s=60) is not None
    aws.dynamodb.update_item(
        TableName=aws.resources.table,
        Key={"tenant": {"S": tenant}, "job_id": {"S": first.job.job_id}},
        UpdateExpression="REMOVE message_id",
    )
    later = aws.service(now=NOW + 3600)

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


class StoreCutOff(JobStore):
    """The job store once AWS has gone away after the record was written: neither the
    failure of the send nor a read gets through."""

    def fail_unsent(self, tenant: str, job_id: str, reason: str) -> bool:
        raise EndpointConnectionError(endpoint_url=UNREACHABLE)

    def get(self, tenant: str, job_id: str) -> Job | None:
        raise EndpointConnectionError(endpoint_url=UNREACHABLE)


def _unreachable_queue(aws: Aws) -> JobQueue:
    """The jobs queue behind a port where nothing listens (one try, no retries)."""
    sqs = boto3.client(
        "sqs",
        endpoint_url=UNREACHABLE,
        region_name="us-east-1",
        config=Config(retries={"total_max_attempts": 1}),
        **DUMMY_CREDENTIALS,
    )
    return JobQueue(queue_url=aws.resources.queue_url, sqs=sqs)


def test_a_retry_after_aws_went_away_mid_submit_queues_the_job(aws: Aws, tenant: str) -> None:
    """Record written, then AWS unreachable: the message is not sent, and the job cannot
    be failed for it. The client was told 503 "try again": its retry sends the message."""
    cut_off = JobService(
        store=aws.store(kind=StoreCutOff), queue=_unreachable_queue(aws), clock=lambda: NOW
    )
    with pytest.raises(JobsUnavailable) as caught:
        _submit(cut_off, tenant, ["a"], idempotency_key="order-1")
    (left,) = aws.store().jobs(tenant)

    retry = _submit(aws.service(), tenant, ["a"], idempotency_key="order-1", correlation_id="req-2")

    assert str(caught.value) == (
        "the job could not be queued (AWS unreachable (EndpointConnectionError))"
    )
    assert caught.value.retryable is True
    assert (left.status, left.attempts, left.message_id) == (JobStatus.QUEUED, 0, None)
    assert (retry.replayed, retry.job.job_id, retry.job.status) == (
        True,
        left.job_id,
        JobStatus.QUEUED,
    )
    (message,) = aws.drain()
    assert JobMessage.decode(message["Body"]).job_id == left.job_id
    assert retry.job.message_id == message["MessageId"]
    assert _submit(aws.service(), tenant, ["a"], idempotency_key="order-1").replayed is True
    assert aws.drain() == [], "queued now: a replay sends nothing more"


class StoreForgetful(JobStore):
    """The job store once AWS has gone away after the message was sent: its id cannot be
    written on the record."""

    def record_sent(self, tenant: str, job_id: str, message_id: str) -> None:
        raise EndpointConnectionError(endpoint_url=UNREACHABLE)


def test_a_job_whose_message_id_is_not_recorded_is_queued_and_a_replay_sends_it_again(
    aws: Aws, tenant: str
) -> None:
    """The send's outcome reads as unknown: queued all the same, and a replay sends a
    second message (harmless) rather than risk none."""
    forgetful = JobService(
        store=aws.store(kind=StoreForgetful), queue=aws.service().queue, clock=lambda: NOW
    )

    first = _submit(forgetful, tenant, ["a"], idempotency_key="order-1")
    (sent,) = aws.drain()
    replay = _submit(aws.service(), tenant, ["a"], idempotency_key="order-1")

    assert (first.replayed, first.job.status, first.job.message_id) == (
        False,
        JobStatus.QUEUED,
        None,
    )
    assert JobMessage.decode(sent["Body"]).job_id == first.job.job_id
    (resent,) = aws.drain()
    assert (replay.replayed, replay.job.message_id) == (True, resent["MessageId"])
    assert JobMessage.decode(resent["Body"]).job_id == first.job.job_id


def test_a_replay_that_cannot_read_the_store_is_unavailable(aws: Aws, tenant: str) -> None:
    """Never an AWS exception out of submit (the API would answer 500): a JobsUnavailable,
    which the API answers 503 "try again"."""
    refused = aws.service(queue_url=aws.resources.queue_url + "-missing")
    with pytest.raises(JobsUnavailable):
        _submit(refused, tenant, ["a"], idempotency_key="order-1")
    cut_off = JobService(store=aws.store(kind=StoreCutOff), queue=refused.queue, clock=lambda: NOW)

    with pytest.raises(JobsUnavailable) as caught:
        _submit(cut_off, tenant, ["a"], idempotency_key="order-1")
    retry = _submit(aws.service(), tenant, ["a"], idempotency_key="order-1")

    assert str(caught.value) == (
        "the job store could not be read (AWS unreachable (EndpointConnectionError))"
    )
    assert (retry.replayed, retry.job.status) == (True, JobStatus.QUEUED)
    assert len(aws.drain()) == 1


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
