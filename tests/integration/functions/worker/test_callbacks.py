"""The callbacks queue's consumer against moto's SQS and DynamoDB: one POST a delivery to a
real HTTP receiver on 127.0.0.1, retried through the queue, recorded on the job, each
record within its own deadline."""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING, Any

import orjson

from functions.runtime.callback_queue import CallbackMessage
from functions.runtime.callbacks import SIGNATURE_HEADER, CallbackSender, tenant_secret, verify
from functions.runtime.jobs import JobStatus
from functions.worker.callbacks import CallbackWorker
from tests.integration.functions.worker.conftest import TENANT, Receiver, receive

if TYPE_CHECKING:
    from functions.runtime.callback_queue import CallbackQueue
    from functions.runtime.job_service import JobService
    from functions.runtime.jobs import Job
    from stratoserve.declaration import Declaration
    from stratoserve.jobs import JobResources

SIGNING_KEY = b"test-signing-key"


def _consumer(
    service: JobService,
    callback_queue: CallbackQueue,
    declaration: Declaration,
    *,
    timeout_s: float = 5.0,
) -> CallbackWorker:
    return CallbackWorker(
        jobs=lambda: service,
        queue=lambda: callback_queue,
        sender=CallbackSender(
            lambda: SIGNING_KEY, attempts=1, timeout_s=timeout_s, allow_loopback=True
        ),
        attempts=declaration.jobs.callback_attempts,
        retry_delay_s=0,
        max_delay_s=declaration.visibility_timeout_s(),
    )


def _finished_job(service: JobService, url: str, *, secret_version: int = 1, seed: int = 0) -> str:
    """A succeeded job with a callback, as the worker leaves it, its callback queued."""
    job_id = service.submit(
        tenant=TENANT,
        api_version="v2",
        model="digits",
        version="1",
        inputs=[[seed] * 64],
        correlation_id=f"test-callback-{seed}",
        callback_url=url,
        secret_version=secret_version,
    ).job.job_id
    claimed = service.store.start(TENANT, job_id, lease_s=60, delivery=1)
    assert claimed is not None
    assert service.store.succeed(claimed, orjson.dumps({"outputs": [{"label": seed}]}))
    return job_id


def _queue_callback(callback_queue: CallbackQueue, service: JobService, job_id: str) -> None:
    callback_queue.send(CallbackMessage(TENANT, job_id, f"test-{job_id}"))
    assert service.store.callback_enqueued(TENANT, job_id)


def _job(service: JobService, job_id: str) -> Job:
    job = service.store.get(TENANT, job_id)
    assert job is not None
    return job


def _as_delivery(record: dict[str, Any], count: int) -> dict[str, Any]:
    return {**record, "attributes": {**record["attributes"], "ApproximateReceiveCount": str(count)}}


def test_a_callback_is_signed_with_the_job_s_secret_version(
    service: JobService,
    sqs: Any,
    resources: JobResources,
    declaration: Declaration,
    receiver: Receiver,
    callback_queue: CallbackQueue,
) -> None:
    job_id = _finished_job(service, receiver.url, secret_version=3)
    _queue_callback(callback_queue, service, job_id)

    calls = receive(sqs, resources, 1, callbacks=True)
    assert _consumer(service, callback_queue, declaration).process(calls) == {}

    ((headers, body),) = receiver.received
    assert verify(tenant_secret(SIGNING_KEY, TENANT, 3), headers[SIGNATURE_HEADER], body)
    assert not verify(tenant_secret(SIGNING_KEY, TENANT, 1), headers[SIGNATURE_HEADER], body)
    posted = orjson.loads(body)
    assert (posted["job_id"], posted["status"]) == (job_id, JobStatus.SUCCEEDED)


def test_a_failed_attempt_comes_back_through_the_queue_then_is_delivered(
    service: JobService,
    sqs: Any,
    resources: JobResources,
    declaration: Declaration,
    receiver: Receiver,
    callback_queue: CallbackQueue,
) -> None:
    receiver.statuses = [503]
    job_id = _finished_job(service, receiver.url)
    _queue_callback(callback_queue, service, job_id)
    consumer = _consumer(service, callback_queue, declaration)

    (first,) = receive(sqs, resources, 1, callbacks=True)
    assert consumer.process([first]) == {first["messageId"]: "HTTP 503"}
    assert _job(service, job_id).callback == {
        "state": "enqueued",
        "delivered": False,
        "attempts": 1,
        "error": "HTTP 503",
    }

    (second,) = receive(sqs, resources, 1, callbacks=True)  # back at once (no backoff here)
    assert second["messageId"] == first["messageId"]
    assert second["attributes"]["ApproximateReceiveCount"] == "2"
    assert consumer.process([second]) == {}

    assert len(receiver.received) == 2
    assert _job(service, job_id).callback == {
        "state": "delivered",
        "delivered": True,
        "attempts": 2,
        "status": 204,
    }


def test_the_last_attempt_s_failure_is_recorded_and_sends_the_message_to_the_dlq(
    service: JobService,
    sqs: Any,
    resources: JobResources,
    declaration: Declaration,
    receiver: Receiver,
    callback_queue: CallbackQueue,
) -> None:
    receiver.statuses = [500]
    job_id = _finished_job(service, receiver.url)
    _queue_callback(callback_queue, service, job_id)
    last = declaration.jobs.callback_attempts

    (record,) = receive(sqs, resources, 1, callbacks=True)
    failed = _consumer(service, callback_queue, declaration).process([_as_delivery(record, last)])

    assert failed == {record["messageId"]: "HTTP 500"}, "failing it moves it to the DLQ"
    assert _job(service, job_id).callback == {
        "state": "failed",
        "delivered": False,
        "attempts": last,
        "error": "HTTP 500",
    }


def test_a_refusal_is_final_at_once(
    service: JobService,
    sqs: Any,
    resources: JobResources,
    declaration: Declaration,
    receiver: Receiver,
    callback_queue: CallbackQueue,
) -> None:
    receiver.statuses = [410]
    job_id = _finished_job(service, receiver.url)
    _queue_callback(callback_queue, service, job_id)

    calls = receive(sqs, resources, 1, callbacks=True)
    assert _consumer(service, callback_queue, declaration).process(calls) == {}

    callback = _job(service, job_id).callback
    assert callback == {"state": "failed", "delivered": False, "attempts": 1, "error": "HTTP 410"}


def test_a_duplicate_of_a_delivered_callback_sends_nothing(
    service: JobService,
    sqs: Any,
    resources: JobResources,
    declaration: Declaration,
    receiver: Receiver,
    callback_queue: CallbackQueue,
) -> None:
    job_id = _finished_job(service, receiver.url)
    _queue_callback(callback_queue, service, job_id)
    consumer = _consumer(service, callback_queue, declaration)
    (record,) = receive(sqs, resources, 1, callbacks=True)
    assert consumer.process([record]) == {}

    assert consumer.process([_as_delivery(record, 2)]) == {}

    assert len(receiver.received) == 1
    assert _job(service, job_id).callback == {
        "state": "delivered",
        "delivered": True,
        "attempts": 1,
        "status": 204,
    }


def test_the_batch_s_callbacks_are_sent_side_by_side_each_within_its_deadline(
    service: JobService,
    sqs: Any,
    resources: JobResources,
    declaration: Declaration,
    callback_queue: CallbackQueue,
) -> None:
    silent = socket.create_server(("127.0.0.1", 0))  # accepts, never answers
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/hooks"
    try:
        job_ids = [_finished_job(service, url, seed=seed) for seed in range(4)]
        for job_id in job_ids:
            _queue_callback(callback_queue, service, job_id)
        calls = receive(sqs, resources, 4, callbacks=True)
        consumer = _consumer(service, callback_queue, declaration, timeout_s=0.5)

        started = time.monotonic()
        failed = consumer.process(calls, deadline=time.monotonic() + 60)
        took = time.monotonic() - started
    finally:
        silent.close()

    assert set(failed) == {record["messageId"] for record in calls}
    assert took < 1.5, f"four attempts of 0.5 s took {took:.1f} s"
    for job_id in job_ids:
        callback = _job(service, job_id).callback
        assert callback is not None
        assert (callback["state"], callback["error"]) == ("enqueued", "no answer within 0.5 s")


def test_records_go_by_the_queue_they_came_from(
    service: JobService,
    sqs: Any,
    resources: JobResources,
    declaration: Declaration,
    callback_queue: CallbackQueue,
) -> None:
    jobs_record = {"messageId": "1", "eventSourceARN": resources.queue_arn}
    callback_record = {"messageId": "2", "eventSourceARN": resources.callbacks_queue_arn}
    consumer = _consumer(service, callback_queue, declaration)

    assert consumer.split([jobs_record, callback_record]) == ([callback_record], [jobs_record])
