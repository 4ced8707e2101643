"""The job store: one DynamoDB item per job (partition key: the tenant, sort key: the job
id, so a tenant can only ever read its own jobs), large inputs and results in S3.

Every status change is a conditional write, so a status never goes backwards: a late or
duplicate delivery of a finished job finds nothing to do, and of two workers racing on
one job only the first result is stored. Records expire with DynamoDB's TTL; an expired
record still waiting for TTL's sweep reads as gone.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson

from functions.runtime.aws import error_code
from functions.runtime.callback_queue import CallbackState
from functions.runtime.jobs import BACKEND_LAMBDA, BACKEND_MODAL, Job, JobStatus

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client

    from stratoserve.declaration import Declaration


class JobNotCancellable(Exception):
    def __init__(self, job: Job) -> None:
        super().__init__(
            f"job {job.job_id} is not queued (status: {job.status}); only a queued job "
            "can be cancelled"
        )
        self.job = job


ENQUEUED = {"state": CallbackState.ENQUEUED, "delivered": False}
"""A job's callback outcome while it waits on the callbacks queue."""

HANDED_TO_CPU = "cpu"
"""A fallen-back job's follow_up once its CPU run is queued: no follow-up token matches."""


class JobInputsMissing(Exception):
    """The inputs a message points at are not in the bucket (expired or deleted)."""


# Numbers and strings of the record, by attribute; everything else is derived.
_NUMBERS = (
    "inputs",
    "created_at",
    "updated_at",
    "expires_at",
    "attempts",
    "started_at",
    "finished_at",
    "lease_until",
    "result_bytes",
    "redrives",
    "dispatched_at",
    "secret_version",
)
_STRINGS = (
    "tenant",
    "job_id",
    "status",
    "model",
    "version",
    "api_version",
    "correlation_id",
    "request_hash",
    "backend",
    "error",
    "result",
    "result_key",
    "callback_url",
    "gpu_call_id",
    "fallback",
    "follow_up",
    "message_id",
)


def _item(job: Job) -> dict[str, Any]:
    item: dict[str, Any] = {}
    for name in _STRINGS:
        value = getattr(job, name)
        if value is not None:
            item[name] = {"S": str(value)}
    for name in _NUMBERS:
        value = getattr(job, name)
        if value is not None:
            item[name] = {"N": repr(value)}
    if job.callback is not None:
        item["callback"] = {"S": orjson.dumps(job.callback).decode()}
    return item


def _job(item: dict[str, Any]) -> Job:
    fields: dict[str, Any] = {}
    for name in _STRINGS:
        if name in item:
            fields[name] = item[name]["S"]
    for name in _NUMBERS:
        if name in item:
            number = item[name]["N"]
            fields[name] = float(number) if "." in number or "e" in number else int(number)
    if "callback" in item:
        fields["callback"] = orjson.loads(item["callback"]["S"])
    fields["status"] = JobStatus(fields["status"])
    fields.setdefault("backend", BACKEND_LAMBDA)
    return Job(**fields)


def _object_name(job: Job) -> str:
    """Where a job's payloads go in the bucket. The creation time makes the name unique
    to this job, not only to its id: an idempotency key's id comes back after the TTL,
    and must not find the old job's result."""
    return f"{job.tenant}/{job.job_id}/{int(job.created_at * 1000)}.json"


def _number(value: float) -> dict[str, str]:
    return {"N": repr(value)}


def _is_condition_failure(error: Exception) -> bool:
    return error_code(error) == "ConditionalCheckFailedException"


class JobStore:
    def __init__(
        self,
        *,
        table: str,
        bucket: str,
        dynamodb: DynamoDBClient,
        s3: S3Client,
        ttl_days: int,
        result_inline_max_bytes: int,
        max_receive_count: int,
        unclaimed_after_s: float | None = None,
        on_settled: Callable[[Job], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`unclaimed_after_s`: how long a queued job's message may still be on its way to
        a worker (Declaration.unclaimed_job_after_s); None, never settle queued jobs.
        `on_settled` hears of each job a read settled as failed (the StuckJobs metric)."""
        self.table = table
        self.bucket = bucket
        self._dynamodb = dynamodb
        self._s3 = s3
        self.ttl_s = ttl_days * 86_400
        self.result_inline_max_bytes = result_inline_max_bytes
        self.max_receive_count = max_receive_count
        self.unclaimed_after_s = unclaimed_after_s
        self._on_settled = on_settled
        self._clock = clock

    @classmethod
    def for_declaration(
        cls,
        declaration: Declaration,
        *,
        table: str,
        bucket: str,
        dynamodb: DynamoDBClient,
        s3: S3Client,
        on_settled: Callable[[Job], None] | None = None,
    ) -> JobStore:
        """The store with the declaration's `[jobs]` settings."""
        jobs = declaration.jobs
        return cls(
            table=table,
            bucket=bucket,
            dynamodb=dynamodb,
            s3=s3,
            ttl_days=jobs.ttl_days,
            result_inline_max_bytes=jobs.result_inline_max_kb * 1024,
            max_receive_count=jobs.max_receive_count,
            unclaimed_after_s=declaration.unclaimed_job_after_s(),
            on_settled=on_settled,
        )

    # -- records -------------------------------------------------------------------------

    def create(self, job: Job) -> tuple[Job, bool]:
        """Store a new job; if the id is taken (an idempotent replay), the stored job and
        False."""
        try:
            self._dynamodb.put_item(
                TableName=self.table,
                Item=_item(job),
                ConditionExpression="attribute_not_exists(job_id) OR expires_at < :now",
                # The same comparison as _read's: a record that reads as gone can be replaced
                # (an int here left a second in which neither was true, and create looped).
                ExpressionAttributeValues={":now": _number(self._clock())},
            )
        except Exception as error:
            if not _is_condition_failure(error):
                raise
            existing = self._read(job.tenant, job.job_id)
            if existing is None:  # expired between the two calls: try once more
                return self.create(job)
            # A replay answers the job as a read shows it (a stuck one, failed).
            return self._settle(existing), False
        return job, True

    def get(self, tenant: str, job_id: str) -> Job | None:
        job = self._read(tenant, job_id)
        return None if job is None else self._settle(job)

    def start(
        self, tenant: str, job_id: str, *, lease_s: float, delivery: int | None = None
    ) -> Job | None:
        """Claim a delivery of the job: running, one more attempt. None when there is
        nothing to do (finished, cancelled, or no such job).

        `delivery` is SQS's receive count for the message: the attempts are then SQS's own
        count (deliveries that died before they could claim the job included), which is
        what decides the move to the dead-letter queue. They never go down: a duplicate
        message with a lower count claims the job and leaves them as they are."""
        now = self._clock()
        if delivery is not None:
            attempts, raising = (
                ":delivery",
                " AND (attribute_not_exists(attempts) OR attempts <= :delivery)",
            )
        else:
            attempts, raising = "if_not_exists(attempts, :zero) + :one", ""
        try:
            answer = self._dynamodb.update_item(
                TableName=self.table,
                Key=self._key(tenant, job_id),
                UpdateExpression=(
                    f"SET #status = :running, attempts = {attempts}, "
                    "started_at = if_not_exists(started_at, :now), lease_until = :lease, "
                    "updated_at = :now"
                ),
                ConditionExpression=(
                    f"attribute_exists(job_id) AND #status IN (:queued, :running){raising}"
                ),
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":running": {"S": JobStatus.RUNNING},
                    ":queued": {"S": JobStatus.QUEUED},
                    ":now": _number(now),
                    ":lease": _number(now + lease_s),
                    **(
                        {":delivery": _number(delivery)}
                        if delivery is not None
                        else {":zero": _number(0), ":one": _number(1)}
                    ),
                },
                ReturnValues="ALL_NEW",
            )
        except Exception as error:
            if not _is_condition_failure(error):
                raise
            if delivery is None:
                return None
            # Refused for its lower count, or because there is nothing to do: ask again
            # without touching the attempts.
            current = self._read(tenant, job_id)
            if current is None or current.finished:
                return None
            return self.start(tenant, job_id, lease_s=lease_s, delivery=current.attempts)
        return _job(answer["Attributes"])

    def succeed(self, job: Job, result: bytes) -> bool:
        """Store the result and finish the job; False when it had already finished (a
        duplicate delivery lost the race: its result is not stored)."""
        values: dict[str, Any] = {
            ":succeeded": {"S": JobStatus.SUCCEEDED},
            ":running": {"S": JobStatus.RUNNING},
            ":now": _number(self._clock()),
        }
        if len(result) <= self.result_inline_max_bytes:
            stored = "#result = :result"
            values[":result"] = {"S": result.decode()}
        else:
            key = self._put_result(job, result)
            stored = "result_key = :key, result_bytes = :bytes"
            values[":key"] = {"S": key}
            values[":bytes"] = _number(len(result))
        try:
            self._dynamodb.update_item(
                TableName=self.table,
                Key=self._key(job.tenant, job.job_id),
                UpdateExpression=(
                    f"SET #status = :succeeded, finished_at = :now, updated_at = :now, {stored} "
                    "REMOVE lease_until, #error"
                ),
                ConditionExpression="#status = :running",
                ExpressionAttributeNames={
                    "#status": "status",
                    "#error": "error",
                    **({"#result": "result"} if "#result" in stored else {}),
                },
                ExpressionAttributeValues=values,
            )
        except Exception as error:
            if _is_condition_failure(error):
                return False
            raise
        return True

    def fail(self, tenant: str, job_id: str, reason: str, *, follow_up: str | None = None) -> bool:
        """Finish the job as failed, with the reason; False when it had already finished
        (or, given the `follow_up` token of the failing message, when another message
        follows the job's GPU call now)."""
        values: dict[str, Any] = {
            ":failed": {"S": JobStatus.FAILED},
            ":reason": {"S": reason},
            ":queued": {"S": JobStatus.QUEUED},
            ":running": {"S": JobStatus.RUNNING},
        }
        condition = "#status IN (:queued, :running)"
        if follow_up is not None:
            condition += " AND follow_up = :token"
            values[":token"] = {"S": follow_up}
        return self._conditional_update(
            tenant,
            job_id,
            "SET #status = :failed, #error = :reason, finished_at = :now, updated_at = :now "
            "REMOVE lease_until",
            condition,
            values,
        )

    def fail_unsent(self, tenant: str, job_id: str, reason: str) -> bool:
        """Fail a job whose message could not be sent, unless a worker has it already (the
        send may have reached SQS before it failed on the way back)."""
        return self._conditional_update(
            tenant,
            job_id,
            "SET #status = :failed, #error = :reason, finished_at = :now, updated_at = :now",
            "#status = :queued AND attempts = :zero",
            {
                ":failed": {"S": JobStatus.FAILED},
                ":reason": {"S": reason},
                ":queued": {"S": JobStatus.QUEUED},
                ":zero": _number(0),
            },
        )

    def note_error(self, tenant: str, job_id: str, reason: str) -> bool:
        """Why the last attempt of a running job failed (it will be retried)."""
        return self._conditional_update(
            tenant,
            job_id,
            "SET #error = :reason, updated_at = :now",
            "#status = :running",
            {":reason": {"S": reason}, ":running": {"S": JobStatus.RUNNING}},
        )

    def cancel(self, tenant: str, job_id: str) -> Job | None:
        """Cancel a queued job: the cancelled job, or None when there is no such job;
        JobNotCancellable once it runs or has finished. Cancelling a cancelled job answers
        it again (a DELETE retried after its answer was lost is not an error)."""
        cancelled = self._conditional_update(
            tenant,
            job_id,
            "SET #status = :cancelled, finished_at = :now, updated_at = :now",
            "#status = :queued",
            {":cancelled": {"S": JobStatus.CANCELLED}, ":queued": {"S": JobStatus.QUEUED}},
        )
        job = self.get(tenant, job_id)
        if job is not None and not cancelled and job.status != JobStatus.CANCELLED:
            raise JobNotCancellable(job)
        return job

    def requeue(self, tenant: str, job_id: str) -> bool:
        """An operator's redrive: a failed (or abandoned running) job is queued again,
        with a fresh count of attempts; a GPU job that fell back to the CPU worker goes
        back to the GPU."""
        job = self._read(tenant, job_id)
        backend = BACKEND_MODAL if job is not None and job.fallback else None
        return self._conditional_update(
            tenant,
            job_id,
            "SET #status = :queued, attempts = :zero, updated_at = :now, "
            "redrives = if_not_exists(redrives, :zero) + :one"
            f"{', backend = :backend' if backend else ''} "
            # Its callback is due again when it finishes again.
            "REMOVE #error, finished_at, lease_until, started_at, gpu_call_id, dispatched_at, "
            "fallback, follow_up, callback, callback_state",
            "#status IN (:failed, :running)",
            {
                ":queued": {"S": JobStatus.QUEUED},
                ":failed": {"S": JobStatus.FAILED},
                ":running": {"S": JobStatus.RUNNING},
                ":zero": _number(0),
                ":one": _number(1),
                **({":backend": {"S": backend}} if backend else {}),
            },
        )

    def record_dispatch(self, tenant: str, job_id: str, call_id: str, follow_up: str) -> bool:
        """The running job's GPU call, and the token of the message that follows it first;
        False when the job has a call already (a duplicate delivery spawned this one), or
        is no longer running on the GPU. The carrying delivery's claim (attempts, lease)
        stands until it hands the following on."""
        return self._conditional_update(
            tenant,
            job_id,
            "SET gpu_call_id = :call, follow_up = :token, dispatched_at = :now, updated_at = :now",
            "#status = :running AND backend = :modal AND attribute_not_exists(gpu_call_id)",
            {
                ":call": {"S": call_id},
                ":token": {"S": follow_up},
                ":running": {"S": JobStatus.RUNNING},
                ":modal": {"S": BACKEND_MODAL},
            },
        )

    def claim_follow_up(
        self, tenant: str, job_id: str, token: str, *, delivery: int, lease_s: float
    ) -> Job | None:
        """Claim a delivery of the message holding token `token`: its receive count and
        lease become the job's, as for any delivery (so a follow-up that dies on its last
        delivery settles the job as abandoned). None when `token` is not the job's current
        one, or the job is not running: the message is a leftover."""
        now = self._clock()
        try:
            answer = self._dynamodb.update_item(
                TableName=self.table,
                Key=self._key(tenant, job_id),
                UpdateExpression=(
                    "SET attempts = :delivery, lease_until = :lease, updated_at = :now"
                ),
                ConditionExpression=(
                    "attribute_exists(job_id) AND #status = :running AND follow_up = :token"
                ),
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":delivery": _number(delivery),
                    ":lease": _number(now + lease_s),
                    ":now": _number(now),
                    ":running": {"S": JobStatus.RUNNING},
                    ":token": {"S": token},
                },
                ReturnValues="ALL_NEW",
            )
        except Exception as error:
            if _is_condition_failure(error):
                return None
            raise
        job = _job(answer["Attributes"])
        return None if job.expires_at < now else job

    def pass_follow_up(self, tenant: str, job_id: str, held: str, successor: str) -> bool:
        """Hand the following of a GPU call from the message holding token `held` to the
        one holding `successor` (already on the queue: no attempt counted, no lease until
        it is delivered); False when `held` is not the current token (another message
        follows the call, and `successor` will be dropped)."""
        return self._conditional_update(
            tenant,
            job_id,
            "SET follow_up = :successor, attempts = :zero, updated_at = :now REMOVE lease_until",
            "#status = :running AND backend = :modal AND follow_up = :held",
            {
                ":successor": {"S": successor},
                ":held": {"S": held},
                ":zero": _number(0),
                ":running": {"S": JobStatus.RUNNING},
                ":modal": {"S": BACKEND_MODAL},
            },
        )

    def fall_back(self, tenant: str, job_id: str, reason: str) -> bool:
        """A running GPU job is for the CPU worker now, with the reason; False when it is
        no longer a running GPU job (another delivery got there first). The carrying
        delivery's claim stands until the CPU run's message is sent (handed_to_cpu)."""
        return self._conditional_update(
            tenant,
            job_id,
            "SET backend = :lambda, fallback = :reason, updated_at = :now",
            "#status = :running AND backend = :modal",
            {
                ":lambda": {"S": BACKEND_LAMBDA},
                ":reason": {"S": reason},
                ":running": {"S": JobStatus.RUNNING},
                ":modal": {"S": BACKEND_MODAL},
            },
        )

    def dispatch_later(self, tenant: str, job_id: str, reason: str) -> bool:
        """A GPU job whose layer is unavailable waits for a fresh dispatch message (sent
        next): the reason is noted, and that message gets a fresh count of attempts."""
        return self._conditional_update(
            tenant,
            job_id,
            "SET #error = :reason, attempts = :zero, updated_at = :now REMOVE lease_until",
            "#status = :running AND backend = :modal AND attribute_not_exists(gpu_call_id)",
            {
                ":reason": {"S": reason},
                ":zero": _number(0),
                ":running": {"S": JobStatus.RUNNING},
                ":modal": {"S": BACKEND_MODAL},
            },
        )

    def handed_to_cpu(self, tenant: str, job_id: str) -> bool:
        """The CPU run's message of a fallen-back job is on the queue: a fresh count of
        attempts for it, and no follow-up of the GPU call may act any more."""
        return self._conditional_update(
            tenant,
            job_id,
            "SET attempts = :zero, follow_up = :done, updated_at = :now REMOVE lease_until",
            "#status = :running AND backend = :lambda",
            {
                ":zero": _number(0),
                ":done": {"S": HANDED_TO_CPU},
                ":running": {"S": JobStatus.RUNNING},
                ":lambda": {"S": BACKEND_LAMBDA},
            },
        )

    def record_sent(self, tenant: str, job_id: str, message_id: str) -> None:
        """The job's message is on the queue, with this SQS id (see Job.message_id)."""
        try:
            self._dynamodb.update_item(
                TableName=self.table,
                Key=self._key(tenant, job_id),
                UpdateExpression="SET message_id = :message",
                # Never recreate a record that expired meanwhile (it would have no status).
                ConditionExpression="attribute_exists(job_id)",
                ExpressionAttributeValues={":message": {"S": message_id}},
            )
        except Exception as error:
            if not _is_condition_failure(error):
                raise

    def callback_enqueued(self, tenant: str, job_id: str) -> bool:
        """The finished job's callback is on the callbacks queue; False when it was
        already (a redelivery of the job's message enqueues only a pending callback)."""
        try:
            self._dynamodb.update_item(
                TableName=self.table,
                Key=self._key(tenant, job_id),
                UpdateExpression="SET callback = :outcome, callback_state = :enqueued",
                # Pending: a callback URL, and neither a state nor an outcome (a record from
                # before callback states with an outcome was called back already).
                ConditionExpression=(
                    "attribute_exists(callback_url) AND attribute_not_exists(callback_state) "
                    "AND attribute_not_exists(callback)"
                ),
                ExpressionAttributeValues={
                    ":outcome": {"S": orjson.dumps(ENQUEUED).decode()},
                    ":enqueued": {"S": CallbackState.ENQUEUED},
                },
            )
        except Exception as error:
            if _is_condition_failure(error):
                return False
            raise
        return True

    def record_callback(self, tenant: str, job_id: str, outcome: dict[str, Any]) -> bool:
        """How the callback went (its `state`: enqueued while it is retried, then
        delivered or failed); False when a delivery was recorded already (a duplicate
        message's outcome does not overwrite it)."""
        state = CallbackState(
            outcome.get("state")
            or (CallbackState.DELIVERED if outcome.get("delivered") else CallbackState.FAILED)
        )
        try:
            self._dynamodb.update_item(
                TableName=self.table,
                Key=self._key(tenant, job_id),
                UpdateExpression="SET callback = :outcome, callback_state = :state",
                # Never recreate a record that expired meanwhile (it would have no status).
                ConditionExpression=(
                    "attribute_exists(job_id) "
                    "AND (attribute_not_exists(callback_state) OR callback_state <> :delivered)"
                ),
                ExpressionAttributeValues={
                    ":outcome": {"S": orjson.dumps(outcome).decode()},
                    ":state": {"S": state},
                    ":delivered": {"S": CallbackState.DELIVERED},
                },
            )
        except Exception as error:
            if _is_condition_failure(error):
                return False
            raise
        return True

    def jobs(self, tenant: str | None = None, status: JobStatus | None = None) -> Iterator[Job]:
        """A tenant's jobs (a query), or every tenant's (a scan: an operator's view)."""
        options: dict[str, Any] = {"TableName": self.table}
        if tenant is not None:
            operation = "query"
            options["KeyConditionExpression"] = "tenant = :tenant"
            options["ExpressionAttributeValues"] = {":tenant": {"S": tenant}}
        else:
            operation = "scan"
        paginator = self._dynamodb.get_paginator(operation)  # type: ignore[call-overload]
        now = self._clock()
        for page in paginator.paginate(**options):
            for item in page.get("Items", []):
                job = _job(item)
                if job.expires_at < now:
                    continue
                job = self._settle(job)
                if status is None or job.status == status:
                    yield job

    def sweep(self) -> int:
        """Settle every job that can never run any more, as a read would (never sent,
        dead-lettered unclaimed, abandoned mid-run): what the scheduled sweep calls, so a
        stuck job is failed, and heard of by `on_settled` (the StuckJobs metric and its
        alarm), even when nobody reads it. A scan of the unfinished jobs only; returns how
        many it failed."""
        paginator = self._dynamodb.get_paginator("scan")
        pages = paginator.paginate(
            TableName=self.table,
            FilterExpression="#status IN (:queued, :running)",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={
                ":queued": {"S": JobStatus.QUEUED},
                ":running": {"S": JobStatus.RUNNING},
            },
        )
        now = self._clock()
        settled = 0
        for page in pages:
            for item in page.get("Items", []):
                job = _job(item)
                if job.expires_at >= now and self._settle(job).status == JobStatus.FAILED:
                    settled += 1
        return settled

    def pending_callbacks(self, *, finished_before: float) -> Iterator[Job]:
        """Finished jobs (succeeded or failed; a cancelled job is not called back) with a
        callback URL whose callback was never queued, finished before `finished_before`:
        settled as failed by a read or a sweep (no worker saw them finish), or finished by
        an invocation that died before queueing the callback on the job's last delivery.
        The bound leaves a job that a running invocation finished just now to that
        invocation. What the scheduled sweep queues (JobStore.callback_enqueued marks it)."""
        paginator = self._dynamodb.get_paginator("scan")
        pages = paginator.paginate(
            TableName=self.table,
            FilterExpression=(
                "#status IN (:succeeded, :failed) AND attribute_exists(callback_url) "
                "AND attribute_not_exists(callback_state) AND attribute_not_exists(callback) "
                "AND finished_at < :before"
            ),
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={
                ":succeeded": {"S": JobStatus.SUCCEEDED},
                ":failed": {"S": JobStatus.FAILED},
                ":before": _number(finished_before),
            },
        )
        now = self._clock()
        for page in pages:
            for item in page.get("Items", []):
                job = _job(item)
                if job.expires_at >= now:
                    yield job

    # -- payloads in S3 --------------------------------------------------------------------

    def put_inputs(self, job: Job, inputs_json: bytes) -> str:
        key = f"inputs/{_object_name(job)}"
        self._s3.put_object(
            Bucket=self.bucket, Key=key, Body=inputs_json, ContentType="application/json"
        )
        return key

    def inputs(self, key: str) -> list[Any]:
        try:
            body = self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except Exception as error:
            if error_code(error) in ("NoSuchKey", "404"):
                raise JobInputsMissing(f"the job's inputs ({key}) are not in the bucket") from None
            raise
        inputs: list[Any] = orjson.loads(body)
        return inputs

    def result_url(self, job: Job, expires_s: int = 3600) -> str:
        assert job.result_key is not None
        url: str = self._s3.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": job.result_key},
            ExpiresIn=expires_s,
        )
        return url

    def result(self, job: Job) -> bytes | None:
        """The result's JSON, wherever it is stored."""
        if job.result is not None:
            return job.result.encode()
        if job.result_key is None:
            return None
        body: bytes = self._s3.get_object(Bucket=self.bucket, Key=job.result_key)["Body"].read()
        return body

    def _put_result(self, job: Job, result: bytes) -> str:
        key = f"results/{_object_name(job)}"
        try:
            # Written once: a duplicate delivery racing this one finds it there (412).
            self._s3.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=result,
                ContentType="application/json",
                IfNoneMatch="*",
            )
        except Exception as error:
            if error_code(error) not in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise
        return key

    # -- internals -----------------------------------------------------------------------

    def _key(self, tenant: str, job_id: str) -> dict[str, Any]:
        return {"tenant": {"S": tenant}, "job_id": {"S": job_id}}

    def _read(self, tenant: str, job_id: str) -> Job | None:
        answer = self._dynamodb.get_item(
            TableName=self.table, Key=self._key(tenant, job_id), ConsistentRead=True
        )
        item = answer.get("Item")
        if item is None:
            return None
        job = _job(item)
        return None if job.expires_at < self._clock() else job

    def _settle(self, job: Job) -> Job:
        """The job as it stands: one that can never run any more is failed, with why."""
        if job.status == JobStatus.RUNNING:
            return self._settle_abandoned(job)
        if job.status == JobStatus.QUEUED:
            return self._settle_unclaimed(job)
        return job

    def _settle_unclaimed(self, job: Job) -> Job:
        """A queued job that no delivery has claimed for longer than its message can take
        to reach a worker (unclaimed_after_s, from the queue's settings) never will: its
        message was never sent (the submitting invocation died between the record and the
        send), or every delivery died before claiming it and SQS moved it to the
        dead-letter queue. Say so, rather than show it queued until it expires.

        Written, as an abandoned job is, with a condition on the record read: a worker
        that claims it later finds it failed and leaves it, so every reader agrees; a
        redrive (`stratoserve jobs redrive`) queues it again."""
        if (
            self.unclaimed_after_s is None
            or job.attempts != 0
            or job.updated_at + self.unclaimed_after_s > self._clock()
        ):
            return job
        sent = "sent, then dead-lettered unclaimed" if job.message_id else "never sent"
        reason = (
            f"never picked up: no worker claimed it within {self.unclaimed_after_s:.0f} s of "
            f"being queued (its message was {sent}: the submitting call or every delivery "
            "died first); submit it again"
        )
        if self._conditional_update(
            job.tenant,
            job.job_id,
            "SET #status = :failed, #error = :reason, finished_at = :now, updated_at = :now",
            "#status = :queued AND attempts = :zero AND updated_at = :seen",
            {
                ":failed": {"S": JobStatus.FAILED},
                ":reason": {"S": reason},
                ":queued": {"S": JobStatus.QUEUED},
                ":zero": _number(0),
                ":seen": _number(job.updated_at),
            },
        ):
            settled = self._read(job.tenant, job.job_id) or job
            if self._on_settled is not None:
                self._on_settled(settled)
            return settled
        return self._read(job.tenant, job.job_id) or job

    def _settle_abandoned(self, job: Job) -> Job:
        """A running job whose last allowed delivery ended without a word (the worker was
        killed, or timed out) will never run again: SQS moves its message to the
        dead-letter queue. Say so, rather than show it running forever. (The messages that
        follow a GPU call claim the job as any delivery does, so this holds for them.)"""
        if (
            job.attempts < self.max_receive_count
            or job.lease_until is None
            or job.lease_until > self._clock()
        ):
            return job
        reason = (
            f"no attempt finished: {job.attempts} deliveries, the last one abandoned"
            f"{f' (last error: {job.error})' if job.error else ''}; the message is in the "
            "dead-letter queue, where `stratoserve jobs redrive` retries it"
        )
        settled = self.fail(job.tenant, job.job_id, reason)
        job = self._read(job.tenant, job.job_id) or job
        if settled and self._on_settled is not None:
            self._on_settled(job)
        return job

    def _conditional_update(
        self,
        tenant: str,
        job_id: str,
        update: str,
        condition: str,
        values: dict[str, Any],
    ) -> bool:
        names = {"#status": "status"}
        if "#error" in update:
            names["#error"] = "error"
        try:
            self._dynamodb.update_item(
                TableName=self.table,
                Key=self._key(tenant, job_id),
                UpdateExpression=update,
                ConditionExpression=f"attribute_exists(job_id) AND {condition}",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues={**values, ":now": _number(self._clock())},
            )
        except Exception as error:
            if _is_condition_failure(error):
                return False
            raise
        return True
