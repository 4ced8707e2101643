"""The real worker handler module in a real local execution environment, configured as
the local stack configures it: init loads every model, warm-ups are answered before the
batch processor, and SQS events get partial batch responses."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from typing import TYPE_CHECKING, Any

import orjson

from functions.runtime.jobs import Job, JobStatus
from functions.worker.sweep import SWEEP_EVENT
from stratoserve.local.aws import function_environment
from stratoserve.local.environments import FunctionPool
from stratoserve.local.stack import function_configs
from tests.conftest import DECLARATION_FILE, ROOT, sample_event
from tests.integration.functions.worker.conftest import TENANT, receive, submit

if TYPE_CHECKING:
    from pathlib import Path

    from functions.runtime.job_service import JobService
    from stratoserve.declaration import Declaration
    from stratoserve.jobs import JobResources


def _invoke_all(
    declaration: Declaration, aws_url: str, resources: JobResources, events: list[Any]
) -> list[Any]:
    configs = function_configs(
        declaration, DECLARATION_FILE, function_environment(aws_url), resources.environment()
    )

    async def scenario() -> list[Any]:
        pool = FunctionPool(configs["worker"], cwd=ROOT)
        try:
            return [(await pool.invoke(event)).result for event in events]
        finally:
            await pool.close()

    return asyncio.run(scenario())


def test_warmups_are_answered_and_a_message_that_is_not_a_job_fails_its_record(
    declaration: Declaration, built_models: Path, aws_url: str, resources: JobResources
) -> None:
    warmup, sam_sample = _invoke_all(
        declaration,
        aws_url,
        resources,
        [{"warmup": True}, sample_event("sqs-receive-message.json")],
    )

    assert warmup["warmup"] is True
    assert warmup["function"] == "worker"
    assert warmup["cold_start"] is True
    assert warmup["models"] == ["digits:1", "embed:1", "embed:2"], "the worker runs every model"
    assert warmup["loaded_now"] == [], "init preloaded them"
    # "Hello from SQS!" is not a job: that record goes back to the queue, reported as such
    # (the sample's receipt handle is not a real one: the backoff call fails and is logged).
    assert sam_sample == {
        "batchItemFailures": [{"itemIdentifier": "19dd0b57-b21e-4ac1-bd88-01bbb068cb78"}]
    }


def test_a_batch_of_jobs_runs_through_the_handler(
    declaration: Declaration,
    built_models: Path,
    aws_url: str,
    resources: JobResources,
    service: JobService,
    sqs: Any,
) -> None:
    job_ids = [
        submit(service, "embed", "2", ["A man is eating food.", "A man is eating bread."]),
        submit(service, "digits", "1", [[0] * 64, [16] * 64]),
    ]
    sqs.send_message(QueueUrl=resources.queue_url, MessageBody="not a job")
    records = receive(sqs, resources, 3)
    not_a_job = next(record["messageId"] for record in records if record["body"] == "not a job")

    (answer,) = _invoke_all(declaration, aws_url, resources, [{"Records": records}])

    assert answer == {"batchItemFailures": [{"itemIdentifier": not_a_job}]}
    for job_id in job_ids:
        job = service.store.get(TENANT, job_id)
        assert job is not None
        assert job.status == JobStatus.SUCCEEDED, job.error
        assert len(orjson.loads(job.result or "null")["outputs"]) == 2


def _stored_beside(
    service: JobService, sqs: Any, resources: JobResources, at: float, **fields: Any
) -> tuple[Job, Job]:
    """A job submitted now (its message taken off the queue: only the record is left), and
    a record of another job like it, created and updated at `at`, with `fields`."""
    submitted = service.store.get(TENANT, submit(service, "digits", "1", [[0] * 64]))
    assert submitted is not None
    receive(sqs, resources, 1)
    other = dataclasses.replace(
        submitted, job_id=str(uuid.uuid4()), created_at=at, updated_at=at, **fields
    )
    service.store.create(other)
    return submitted, other


def test_the_scheduled_sweep_fails_a_job_that_never_reached_the_queue(
    declaration: Declaration,
    built_models: Path,
    aws_url: str,
    resources: JobResources,
    service: JobService,
    sqs: Any,
) -> None:
    # A record whose submitting invocation died before the send, long enough ago that its
    # message could no longer be on its way; nobody reads it.
    long_ago = time.time() - declaration.unclaimed_job_after_s() - 60
    submitted, stuck = _stored_beside(service, sqs, resources, long_ago, message_id=None)

    (answer,) = _invoke_all(declaration, aws_url, resources, [SWEEP_EVENT])

    assert answer["sweep"] == "jobs"
    assert answer["settled"] >= 1
    job = service.store.get(TENANT, stuck.job_id)
    assert job is not None
    assert job.status == JobStatus.FAILED
    assert job.error is not None and "never picked up" in job.error
    assert "never sent" in job.error
    fresh = service.store.get(TENANT, submitted.job_id)
    assert fresh is not None and fresh.status == JobStatus.QUEUED


def test_the_sweep_queues_the_callback_no_worker_queued(
    declaration: Declaration,
    built_models: Path,
    aws_url: str,
    resources: JobResources,
    service: JobService,
    sqs: Any,
) -> None:
    # Failed by a read long ago (no worker saw it finish, so none queued its callback).
    long_ago = time.time() - declaration.visibility_timeout_s() - 60
    _, settled = _stored_beside(
        service,
        sqs,
        resources,
        long_ago,
        status=JobStatus.FAILED,
        error="never picked up",
        finished_at=long_ago,
        callback_url="https://example.com/hooks/jobs",
    )

    first, again = _invoke_all(declaration, aws_url, resources, [SWEEP_EVENT, SWEEP_EVENT])

    assert first["callbacks_queued"] >= 1
    assert again["callbacks_queued"] == 0, "queued once"
    messages = sqs.receive_message(
        QueueUrl=resources.callbacks_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
    ).get("Messages", [])
    assert settled.job_id in [orjson.loads(message["Body"])["job_id"] for message in messages]
    job = service.store.get(TENANT, settled.job_id)
    assert job is not None and job.callback is not None
    assert job.callback["state"] == "enqueued"
