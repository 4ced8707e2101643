"""The job path's AWS resources, and the operator's view of jobs (`stratoserve jobs`).

`create_job_resources` lays out in the local stack's moto what the CDK app deploys: the
jobs queue and its dead-letter queue (redrive after `max_receive_count` deliveries), the
job table (tenant id + job id, TTL), the results bucket and the tenant registry.
`JobAdmin` lists and shows jobs and redrives the dead-letter queue, with the same boto3
calls against either.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from functions.runtime.job_store import JobStore
from functions.runtime.jobs import JobMessage, JobStatus, MalformedMessage
from stratoserve.declaration import function_environment as variables
from stratoserve.tenants import TenantRegistry, create_registry_table, table_name

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
    tenants_table: str = ""
    """The tenant registry (API key id -> tenant), which `stratoserve keys` writes."""
    callbacks_queue_url: str = ""
    """Finished jobs' callbacks, consumed by the worker (functions/worker/callbacks.py)."""
    callbacks_queue_arn: str = ""
    callbacks_dead_letter_queue_url: str = ""

    def environment(self) -> dict[str, str]:
        """What the functions are told (the CDK app sets the same variables)."""
        return {
            variables.JOBS_TABLE: self.table,
            variables.JOBS_BUCKET: self.bucket,
            variables.JOBS_QUEUE_URL: self.queue_url,
            variables.TENANTS_TABLE: self.tenants_table,
            variables.CALLBACKS_QUEUE_URL: self.callbacks_queue_url,
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
        "tenants_table": table_name(project),
        "callbacks_queue": f"{project}-callbacks",
        "callbacks_dead_letter_queue": f"{project}-callbacks-dlq",
    }


def create_job_resources(declaration: Declaration, client: Callable[[str], Any]) -> JobResources:
    """Create (or find) the queue, DLQ, tables and bucket; `client(service)` gives boto3
    clients for the target account."""
    names = resource_names(declaration)
    sqs = client("sqs")
    queue_url, queue_arn, dlq_url = _create_queue(
        sqs,
        names["queue"],
        names["dead_letter_queue"],
        declaration.jobs.max_receive_count,
        declaration,
    )
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
    create_registry_table(dynamodb, names["tenants_table"])
    # One POST a delivery: `callback_attempts` deliveries, then its dead-letter queue.
    callbacks_url, callbacks_arn, callbacks_dlq_url = _create_queue(
        sqs,
        names["callbacks_queue"],
        names["callbacks_dead_letter_queue"],
        declaration.jobs.callback_attempts,
        declaration,
    )
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
        tenants_table=names["tenants_table"],
        callbacks_queue_url=callbacks_url,
        callbacks_queue_arn=callbacks_arn,
        callbacks_dead_letter_queue_url=callbacks_dlq_url,
    )


def _create_queue(
    sqs: Any, name: str, dead_letters: str, max_receive_count: int, declaration: Declaration
) -> tuple[str, str, str]:
    """A queue and its dead-letter queue, as infra_cdk/constructs/_queues.py deploys them:
    (url, arn, the dead-letter queue's url)."""

    def arn(url: str) -> str:
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        return str(attributes["Attributes"]["QueueArn"])

    dlq_url = sqs.create_queue(
        QueueName=dead_letters,
        Attributes={"MessageRetentionPeriod": str(14 * 86_400)},
    )["QueueUrl"]
    redrive = {"deadLetterTargetArn": arn(dlq_url), "maxReceiveCount": max_receive_count}
    url = sqs.create_queue(
        QueueName=name,
        Attributes={
            "VisibilityTimeout": str(declaration.visibility_timeout_s()),
            "RedrivePolicy": json.dumps(redrive),
            # A message lives as long as its job (SQS keeps one 14 days at most).
            "MessageRetentionPeriod": str(min(declaration.jobs.ttl_days, 14) * 86_400),
        },
    )["QueueUrl"]
    return url, arn(url), dlq_url


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
    def __init__(
        self, resources: JobResources, store: JobStore, sqs: Any, tenants: TenantRegistry
    ) -> None:
        self.resources = resources
        self.store = store
        self.tenants = tenants
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
        registry = TenantRegistry(
            client("dynamodb"),
            resources.tenants_table or resource_names(declaration)["tenants_table"],
        )
        return cls(resources, store, client("sqs"), registry)

    def tenant_ids(self, tenant: str) -> list[str]:
        """Every id tenant name `tenant` has had, and the name itself (the jobs of a key
        made before the registry are stored under its name)."""
        ids = self.tenants.tenant_ids(tenant)
        return ids if tenant in ids else [*ids, tenant]

    def jobs(self, tenant: str | None = None, status: JobStatus | None = None) -> list[Job]:
        """Every job, or tenant name `tenant`'s (under each id it has had), oldest first."""
        if tenant is None:
            found = list(self.store.jobs(None, status))
        else:
            found = [
                job
                for tenant_id in self.tenant_ids(tenant)
                for job in self.store.jobs(tenant_id, status)
            ]
        return sorted(found, key=lambda job: job.created_at)

    def find(self, job_id: str, tenant: str | None = None) -> Job | None:
        if tenant is not None:
            for tenant_id in self.tenant_ids(tenant):
                job = self.store.get(tenant_id, job_id)
                if job is not None:
                    return job
            return None
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
