"""The job path's resources and the operator's redrive, against a real moto server."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ClientError

from functions.runtime.job_queue import CORRELATION_ATTRIBUTE, JobQueue
from functions.runtime.job_service import JobService
from functions.runtime.jobs import JobStatus
from stratoserve.declaration import function_environment as variables
from stratoserve.jobs import JobAdmin, Redrive, create_job_resources
from stratoserve.local.aws import LocalAws, client
from tests.integration.stratoserve.moto import reset_moto

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from stratoserve.declaration import Declaration
    from stratoserve.jobs import JobResources

TENANT = "acme"


@pytest.fixture(scope="module")
def aws_client() -> Iterator[Callable[[str], Any]]:
    aws = LocalAws()
    url = aws.start()
    try:
        yield lambda service: client(service, url)
    finally:
        reset_moto(url)  # moto keeps its state per process, across server instances
        aws.stop()


@pytest.fixture(scope="module")
def resources(declaration: Declaration, aws_client: Callable[[str], Any]) -> JobResources:
    return create_job_resources(declaration, aws_client)


@pytest.fixture(autouse=True)
def fresh_resources(
    declaration: Declaration, aws_client: Callable[[str], Any], resources: JobResources
) -> Iterator[None]:
    """Each test starts with empty queues, table and bucket: moto is reset after it and
    the resources made again, at the same names and URLs."""
    yield
    reset_moto(aws_client("sqs").meta.endpoint_url)
    assert create_job_resources(declaration, aws_client) == resources


def _attributes(sqs: Any, url: str) -> dict[str, str]:
    answer: dict[str, str] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])[
        "Attributes"
    ]
    return answer


def test_the_queue_redrives_to_its_dead_letter_queue_as_declared(
    declaration: Declaration, aws_client: Callable[[str], Any], resources: JobResources
) -> None:
    sqs = aws_client("sqs")
    queue = _attributes(sqs, resources.queue_url)
    dead_letter_queue = _attributes(sqs, resources.dead_letter_queue_url)

    assert queue["QueueArn"] == resources.queue_arn
    assert int(queue["VisibilityTimeout"]) == declaration.visibility_timeout_s()
    assert json.loads(queue["RedrivePolicy"]) == {
        "deadLetterTargetArn": dead_letter_queue["QueueArn"],
        "maxReceiveCount": declaration.jobs.max_receive_count,
    }
    assert create_job_resources(declaration, aws_client) == resources, "found, not made twice"


def test_the_callbacks_queue_redrives_after_the_declared_attempts(
    declaration: Declaration, aws_client: Callable[[str], Any], resources: JobResources
) -> None:
    sqs = aws_client("sqs")
    queue = _attributes(sqs, resources.callbacks_queue_url)
    dead_letter_queue = _attributes(sqs, resources.callbacks_dead_letter_queue_url)

    assert queue["QueueArn"] == resources.callbacks_queue_arn
    assert int(queue["VisibilityTimeout"]) == declaration.visibility_timeout_s()
    assert json.loads(queue["RedrivePolicy"]) == {
        "deadLetterTargetArn": dead_letter_queue["QueueArn"],
        "maxReceiveCount": declaration.jobs.callback_attempts,
    }
    assert resources.environment()[variables.CALLBACKS_QUEUE_URL] == resources.callbacks_queue_url


def test_messages_inputs_and_results_expire_with_their_jobs(
    declaration: Declaration, aws_client: Callable[[str], Any], resources: JobResources
) -> None:
    ttl_days = declaration.jobs.ttl_days
    assert ttl_days <= 14, "the shipped TTL fits SQS's retention"

    queue = _attributes(aws_client("sqs"), resources.queue_url)
    rules = aws_client("s3").get_bucket_lifecycle_configuration(Bucket=resources.bucket)["Rules"]

    assert int(queue["MessageRetentionPeriod"]) == ttl_days * 86_400
    assert sorted(
        (rule["Filter"]["Prefix"], rule["Status"], rule["Expiration"]["Days"]) for rule in rules
    ) == [("inputs/", "Enabled", ttl_days), ("results/", "Enabled", ttl_days)]


def test_a_message_is_kept_at_most_sqs_s_fourteen_days(
    declaration: Declaration, aws_client: Callable[[str], Any]
) -> None:
    long_lived = declaration.model_copy(
        update={
            "project": declaration.project.model_copy(update={"name": "long-lived"}),
            "jobs": declaration.jobs.model_copy(update={"ttl_days": 30}),
        }
    )

    made = create_job_resources(long_lived, aws_client)

    queue = _attributes(aws_client("sqs"), made.queue_url)
    assert int(queue["MessageRetentionPeriod"]) == 14 * 86_400
    rules = aws_client("s3").get_bucket_lifecycle_configuration(Bucket=made.bucket)["Rules"]
    assert {rule["Expiration"]["Days"] for rule in rules} == {30}


def _dead_letter(sqs: Any, resources: JobResources) -> dict[str, Any]:
    """Take the next message off the jobs queue and put it in the DLQ, as SQS does after
    the last failed delivery."""
    message: dict[str, Any]
    (message,) = sqs.receive_message(
        QueueUrl=resources.queue_url, MaxNumberOfMessages=1, MessageAttributeNames=["All"]
    )["Messages"]
    sqs.send_message(
        QueueUrl=resources.dead_letter_queue_url,
        MessageBody=message["Body"],
        MessageAttributes=message["MessageAttributes"],
    )
    sqs.delete_message(QueueUrl=resources.queue_url, ReceiptHandle=message["ReceiptHandle"])
    return message


def _submitter(admin: JobAdmin, resources: JobResources, sqs: Any) -> Callable[[str], str]:
    service = JobService(store=admin.store, queue=JobQueue(queue_url=resources.queue_url, sqs=sqs))

    def submit(correlation_id: str) -> str:
        return service.submit(
            tenant=TENANT,
            api_version="v2",
            model="digits",
            version="1",
            inputs=[[0] * 64],
            correlation_id=correlation_id,
        ).job.job_id

    return submit


def _message_counts(sqs: Any, url: str) -> int:
    """Messages on the queue, visible or in flight."""
    left = _attributes(sqs, url)
    return int(left["ApproximateNumberOfMessages"]) + int(
        left["ApproximateNumberOfMessagesNotVisible"]
    )


def _jobs_queue(sqs: Any, resources: JobResources) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = sqs.receive_message(
        QueueUrl=resources.queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    ).get("Messages", [])
    return messages


def test_redrive_requeues_failed_jobs_and_drops_finished_ones(
    declaration: Declaration, aws_client: Callable[[str], Any], resources: JobResources
) -> None:
    admin = JobAdmin.connect(declaration, resources, aws_client)
    sqs = aws_client("sqs")
    submit = _submitter(admin, resources, sqs)
    lease_s = declaration.visibility_timeout_s()

    failed_id = submit("corr-failed")
    failed_message = _dead_letter(sqs, resources)
    for _ in range(declaration.jobs.max_receive_count):
        admin.store.start(TENANT, failed_id, lease_s=lease_s)
    admin.store.fail(TENANT, failed_id, "gave up after 5 deliveries: KeyError: '9'")
    succeeded_id = submit("corr-succeeded")
    _dead_letter(sqs, resources)
    started = admin.store.start(TENANT, succeeded_id, lease_s=lease_s)
    assert started is not None
    admin.store.succeed(started, b'{"outputs": [1]}')
    sqs.send_message(QueueUrl=resources.dead_letter_queue_url, MessageBody="Hello from SQS!")

    outcome = admin.redrive()

    assert outcome == Redrive(
        requeued=[failed_id], already_finished=[succeeded_id], expired=[], not_jobs=1
    )
    requeued = admin.store.get(TENANT, failed_id)
    assert requeued is not None
    assert (requeued.status, requeued.attempts, requeued.redrives) == (JobStatus.QUEUED, 0, 1)
    assert requeued.error is None and requeued.started_at is None
    (back,) = _jobs_queue(sqs, resources)
    assert back["Body"] == failed_message["Body"]
    assert back["MessageAttributes"][CORRELATION_ATTRIBUTE]["StringValue"] == "corr-failed"
    finished = admin.store.get(TENANT, succeeded_id)
    assert finished is not None and finished.status == JobStatus.SUCCEEDED
    assert _message_counts(sqs, resources.dead_letter_queue_url) == 1, (
        "only the message that is not a job stays in the DLQ"
    )


def test_a_message_leaves_the_dead_letter_queue_only_once_it_is_sent(
    declaration: Declaration, aws_client: Callable[[str], Any], resources: JobResources
) -> None:
    admin = JobAdmin.connect(declaration, resources, aws_client)
    sqs = aws_client("sqs")
    job_id = _submitter(admin, resources, sqs)("corr-1")
    _dead_letter(sqs, resources)
    admin.store.start(TENANT, job_id, lease_s=60)
    admin.store.fail(TENANT, job_id, "gave up after 5 deliveries: KeyError: '9'")
    unreachable = replace(resources, queue_url=resources.queue_url + "-missing")
    broken = JobAdmin(unreachable, admin.store, sqs, admin.tenants)

    with pytest.raises(ClientError, match="NonExistentQueue"):
        broken.redrive()

    assert _message_counts(sqs, resources.dead_letter_queue_url) == 1, "still in the DLQ"
    job = admin.store.get(TENANT, job_id)
    assert job is not None
    assert job.status == JobStatus.QUEUED, "requeued before its message was sent"


def test_redrive_sends_a_job_left_queued_by_a_redrive_whose_send_failed(
    declaration: Declaration, aws_client: Callable[[str], Any], resources: JobResources
) -> None:
    admin = JobAdmin.connect(declaration, resources, aws_client)
    sqs = aws_client("sqs")
    job_id = _submitter(admin, resources, sqs)("corr-left-queued")
    dead = _dead_letter(sqs, resources)
    admin.store.start(TENANT, job_id, lease_s=60)
    admin.store.fail(TENANT, job_id, "gave up after 5 deliveries: KeyError: '9'")
    # The earlier redrive: the job queued again, then the send failed.
    assert admin.store.requeue(TENANT, job_id) is True

    outcome = admin.redrive()

    assert outcome == Redrive(requeued=[job_id], already_finished=[], expired=[], not_jobs=0)
    job = admin.store.get(TENANT, job_id)
    assert job is not None
    assert (job.status, job.attempts, job.redrives) == (JobStatus.QUEUED, 0, 1)
    (back,) = _jobs_queue(sqs, resources)
    assert back["Body"] == dead["Body"]
    assert back["MessageAttributes"][CORRELATION_ATTRIBUTE]["StringValue"] == "corr-left-queued"
    assert _message_counts(sqs, resources.dead_letter_queue_url) == 0


def test_redrive_drops_the_message_of_a_job_that_expired(
    declaration: Declaration, aws_client: Callable[[str], Any], resources: JobResources
) -> None:
    admin = JobAdmin.connect(declaration, resources, aws_client)
    sqs = aws_client("sqs")
    job_id = _submitter(admin, resources, sqs)("corr-expired")
    _dead_letter(sqs, resources)
    # DynamoDB's TTL swept the record while the message waited in the DLQ.
    aws_client("dynamodb").delete_item(
        TableName=resources.table, Key={"tenant": {"S": TENANT}, "job_id": {"S": job_id}}
    )

    outcome = admin.redrive()

    assert outcome == Redrive(requeued=[], already_finished=[], expired=[job_id], not_jobs=0)
    assert admin.store.get(TENANT, job_id) is None, "no record was made"
    assert _jobs_queue(sqs, resources) == []
    assert _message_counts(sqs, resources.dead_letter_queue_url) == 0
