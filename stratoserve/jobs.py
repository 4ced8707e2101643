"""The job path's AWS resources, and the operator's view of jobs (`stratoserve jobs`).

`create_job_resources` lays out in the local stack's moto what the CDK app deploys: the
jobs queue and its dead-letter queue (redrive after `max_receive_count` deliveries), the
job table (tenant + job id, TTL) and the results bucket. `JobAdmin` lists and shows jobs
and redrives the dead-letter queue, with the same boto3 calls against either.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from functions.runtime.job_store import JobStore
from functions.runtime.jobs import JobMessage, JobStatus, MalformedMessage

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from functions.runtime.jobs import Job
    from stratoserve.declaration import Declaration


@dataclass(frozen=True)
class JobResources:
    queue_url: str
    queue_arn: str
    dead_letter_queue_url: str
    table: str
    bucket: str

    def environment(self) -> dict[str, str]:
        """What the functions are told (the CDK app sets the same variables)."""
        return {
            "STRATOSERVE_JOBS_TABLE": self.table,
            "STRATOSERVE_JOBS_BUCKET": self.bucket,
            "STRATOSERVE_JOBS_QUEUE_URL": self.queue_url,
        }

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def resource_names(declaration: Declaration) -> dict[str, str]:
    project = declaration.project.name
    return {
        "queue": f"{project}-jobs",
        "dead_letter_queue": f"{project}-jobs-dlq",
        "table": f"{project}-jobs",
        "bucket": f"{project}-jobs",
    }


def create_job_resources(declaration: Declaration, client: Callable[[str], Any]) -> JobResources:
    """Create (or find) the queue, DLQ, table and bucket; `client(service)` gives boto3
    clients for the target account."""
    names = resource_names(declaration)
    sqs = client("sqs")
    dlq_url = sqs.create_queue(
        QueueName=names["dead_letter_queue"],
        Attributes={"MessageRetentionPeriod": str(14 * 86_400)},
    )["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    redrive = {
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": declaration.jobs.max_receive_count,
    }
    queue_url = sqs.create_queue(
        QueueName=names["queue"],
        Attributes={
            "VisibilityTimeout": str(declaration.visibility_timeout_s()),
            "RedrivePolicy": json.dumps(redrive),
            # A message lives as long as its job (SQS keeps one 14 days at most).
            "MessageRetentionPeriod": str(min(declaration.jobs.ttl_days, 14) * 86_400),
        },
    )["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    dynamodb = client("dynamodb")
    try:
        dynamodb.create_table(
            TableName=names["table"],
            KeySchema=[
                {"AttributeName": "tenant", "KeyType": "HASH"},
                {"AttributeName": "job_id", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "tenant", "AttributeType": "S"},
                {"AttributeName": "job_id", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        dynamodb.update_time_to_live(
            TableName=names["table"],
            TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"},
        )
    except dynamodb.exceptions.ResourceInUseException:
        pass
    s3 = client("s3")
    owned = (s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists)
    with contextlib.suppress(*owned):
        s3.create_bucket(Bucket=names["bucket"])
    # Inputs and results expire with their jobs.
    s3.put_bucket_lifecycle_configuration(
        Bucket=names["bucket"],
        LifecycleConfiguration={
            "Rules": [
                {
                    "ID": f"expire-{prefix}",
                    "Filter": {"Prefix": f"{prefix}/"},
                    "Status": "Enabled",
                    "Expiration": {"Days": declaration.jobs.ttl_days},
                }
                for prefix in ("inputs", "results")
            ]
        },
    )
    return JobResources(
        queue_url=queue_url,
        queue_arn=queue_arn,
        dead_letter_queue_url=dlq_url,
        table=names["table"],
        bucket=names["bucket"],
    )


@dataclass(frozen=True)
class Redrive:
    requeued: list[str]
    """Job ids queued again."""
    already_finished: list[str]
    """Jobs that finished meanwhile: their messages were dropped."""
    expired: list[str]
    """Jobs no longer in the store (past their TTL): their messages were dropped."""
    not_jobs: int
    """Messages that are not stratoserve jobs: left in the dead-letter queue."""


class JobAdmin:
    def __init__(self, resources: JobResources, store: JobStore, sqs: Any) -> None:
        self.resources = resources
        self.store = store
        self._sqs = sqs

    @classmethod
    def connect(
        cls, declaration: Declaration, resources: JobResources, client: Callable[[str], Any]
    ) -> JobAdmin:
        store = JobStore.for_declaration(
            declaration,
            table=resources.table,
            bucket=resources.bucket,
            dynamodb=client("dynamodb"),
            s3=client("s3"),
        )
        return cls(resources, store, client("sqs"))

    def jobs(self, tenant: str | None = None, status: JobStatus | None = None) -> list[Job]:
        return sorted(self.store.jobs(tenant, status), key=lambda job: job.created_at)

    def find(self, job_id: str, tenant: str | None = None) -> Job | None:
        if tenant is not None:
            return self.store.get(tenant, job_id)
        return next((job for job in self.store.jobs() if job.job_id == job_id), None)

    def dead_letters(self) -> Iterator[dict[str, Any]]:
        """Every message in the DLQ, each received once (hidden for a minute meanwhile)."""
        while True:
            answer = self._sqs.receive_message(
                QueueUrl=self.resources.dead_letter_queue_url,
                MaxNumberOfMessages=10,
                VisibilityTimeout=60,
                WaitTimeSeconds=0,
                MessageAttributeNames=["All"],
            )
            messages = answer.get("Messages", [])
            if not messages:
                return
            yield from messages

    def redrive(self) -> Redrive:
        """Move the DLQ's job messages back to the jobs queue, each job queued again
        (a fresh count of attempts) before its message is; a message leaves the DLQ only
        once it is on the jobs queue."""
        requeued: list[str] = []
        finished: list[str] = []
        gone: list[str] = []
        not_jobs = 0
        for message in list(self.dead_letters()):
            try:
                job_message = JobMessage.decode(message["Body"])
            except MalformedMessage:
                not_jobs += 1
                continue
            tenant, job_id = job_message.tenant, job_message.job_id
            if not self.store.requeue(tenant, job_id):
                job = self.store.get(tenant, job_id)
                if job is None:
                    gone.append(job_id)
                elif job.status != JobStatus.QUEUED:
                    finished.append(job_id)
                # queued: requeued by an earlier redrive whose send failed; send it now
            if job_id not in finished and job_id not in gone:
                # A message that polled a GPU call becomes the job's message again: the
                # requeued job is dispatched afresh.
                body = replace(job_message, call_id=None, follow_up=None).encode().decode()
                self._sqs.send_message(
                    QueueUrl=self.resources.queue_url,
                    MessageBody=body if job_message.call_id else message["Body"],
                    MessageAttributes=message.get("MessageAttributes", {}),
                )
                requeued.append(job_id)
            self._sqs.delete_message(
                QueueUrl=self.resources.dead_letter_queue_url,
                ReceiptHandle=message["ReceiptHandle"],
            )
        return Redrive(requeued, finished, gone, not_jobs)
