"""The job path's resources and the operator's redrive, against a real moto server."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from functions.runtime.job_queue import CORRELATION_ATTRIBUTE, JobQueue
from functions.runtime.job_service import JobService
from functions.runtime.jobs import JobStatus
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


def test_redrive_requeues_failed_jobs_and_drops_finished_ones(
    declaration: Declaration, aws_client: Callable[[str], Any], resources: JobResources
) -> None:
    admin = JobAdmin.connect(declaration, resources, aws_client)
    sqs = aws_client("sqs")
    service = JobService(store=admin.store, queue=JobQueue(queue_url=resources.queue_url, sqs=sqs))
    lease_s = declaration.visibility_timeout_s()

    def submit(correlation_id: str) -> str:
        return service.submit(
            tenant=TENANT,
            api_version="v2",
            model="digits",
            version="1",
            inputs=[[0] * 64],
            correlation_id=correlation_id,
        ).job.job_id

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

    assert outcome == Redrive(requeued=[failed_id], already_finished=[succeeded_id], not_jobs=1)
    requeued = admin.store.get(TENANT, failed_id)
    assert requeued is not None
    assert (requeued.status, requeued.attempts, requeued.redrives) == (JobStatus.QUEUED, 0, 1)
    assert requeued.error is None and requeued.started_at is None
    (back,) = sqs.receive_message(
        QueueUrl=resources.queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    )["Messages"]
    assert back["Body"] == failed_message["Body"]
    assert back["MessageAttributes"][CORRELATION_ATTRIBUTE]["StringValue"] == "corr-failed"
    finished = admin.store.get(TENANT, succeeded_id)
    assert finished is not None and finished.status == JobStatus.SUCCEEDED
    left = _attributes(sqs, resources.dead_letter_queue_url)
    visible = int(left["ApproximateNumberOfMessages"])
    in_flight = int(left["ApproximateNumberOfMessagesNotVisible"])
    assert visible + in_flight == 1, "only the message that is not a job stays in the DLQ"
