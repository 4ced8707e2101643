"""The worker's logic on real batches: jobs submitted through the job service into moto's
SQS and DynamoDB, received as Lambda's records, run on the real built models; callbacks
to a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import re
import socket
import time
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import orjson
import pytest

from functions.runtime.callbacks import SIGNATURE_HEADER, CallbackSender, tenant_secret, verify
from functions.runtime.environment import ExecutionEnvironment, Settings
from functions.runtime.job_service import INLINE_INPUTS_MAX_BYTES
from functions.runtime.jobs import JobStatus
from functions.runtime.models import ModelKey
from functions.worker.batch import CHUNK_INPUTS, JobWorker
from functions.worker.callbacks import CallbackWorker
from tests.conftest import DECLARATION_FILE
from tests.integration.functions.worker.conftest import (
    TENANT,
    Receiver,
    job_id_of,
    receive,
    submit,
)

if TYPE_CHECKING:
    from pathlib import Path

    from functions.runtime.callback_queue import CallbackQueue
    from functions.runtime.job_service import JobService
    from functions.runtime.jobs import Job
    from stratoserve.declaration import Declaration
    from stratoserve.jobs import JobResources

# A text's vector must not depend on its batch-mates: the runtime runs a dynamically
# quantized model (embed v2, int8) one text per call for that reason, and fp32 batching
# changes nothing.
EXACT_COSINE = 0.9999
SENTENCE = "the quick brown fox jumps over a lazy dog by the river at dawn"
WORDS = SENTENCE.split()


def _texts(count: int, seed: int) -> list[str]:
    """Texts of varied lengths, so length-sorted chunks reorder them across jobs."""
    rng = np.random.default_rng(seed)
    return [
        " ".join(rng.choice(WORDS, size=int(rng.integers(1, 25)))) + f" ({seed}-{index})"
        for index in range(count)
    ]


def _rows(count: int, seed: int) -> list[list[int]]:
    return np.random.default_rng(seed).integers(0, 17, size=(count, 64)).tolist()  # type: ignore[no-any-return]


# (model, version, inputs): more inputs than one chunk, three model groups, ragged jobs.
BATCH: list[tuple[str, str, list[Any]]] = [
    ("embed", "2", _texts(40, 1)),
    ("digits", "1", _rows(7, 2)),
    ("embed", "2", _texts(30, 3)),
    ("embed", "1", _texts(12, 4)),
    ("embed", "2", _texts(5, 5)),
    ("digits", "1", _rows(1, 6)),
    ("embed", "1", _texts(9, 7)),
]
assert sum(len(inputs) for model, _, inputs in BATCH if model == "embed") > CHUNK_INPUTS


@pytest.fixture(scope="module")
def environment(
    declaration: Declaration, built_models: Path, resources: JobResources
) -> ExecutionEnvironment:
    settings = Settings(
        function="worker",
        jobs_table=resources.table,
        jobs_bucket=resources.bucket,
        jobs_queue_url=resources.queue_url,
    )
    environment = ExecutionEnvironment(declaration, DECLARATION_FILE, "worker", settings=settings)
    environment.cache.preload(environment.served_keys())
    return environment


def _worker(environment: ExecutionEnvironment, service: JobService, **options: Any) -> JobWorker:
    return JobWorker(environment, jobs=lambda: service, **options)


SIGNING_KEY = b"test-signing-key"
DEFERRED = "deferred: the invocation ran out of time"


def _with_receive_count(record: dict[str, Any], count: int) -> dict[str, Any]:
    """The record as SQS's `count`-th delivery of its message."""
    return {**record, "attributes": {**record["attributes"], "ApproximateReceiveCount": str(count)}}


def _job(service: JobService, job_id: str) -> Job:
    job = service.store.get(TENANT, job_id)
    assert job is not None
    return job


def _outputs(service: JobService, job_id: str) -> list[Any]:
    job = _job(service, job_id)
    assert job.status == JobStatus.SUCCEEDED, job.error
    result = service.store.result(job)
    assert result is not None
    outputs: list[Any] = orjson.loads(result)["outputs"]
    return outputs


def _alone(environment: ExecutionEnvironment, model: str, version: str, inputs: list[Any]) -> Any:
    """The job's inputs through the model by themselves, as the inline path runs them."""
    with environment.cache.use(ModelKey(model, version)) as loaded:
        runner = loaded.runner
        outputs = runner.run(runner.check(inputs))
        return orjson.loads(orjson.dumps(outputs, option=orjson.OPT_SERIALIZE_NUMPY))


def _cosines(first: list[list[float]], second: list[list[float]]) -> np.ndarray:
    a, b = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    assert a.shape == b.shape
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))  # type: ignore[no-any-return]


def _assert_same_outputs(model: str, got: list[Any], expected: list[Any], cosine: float) -> None:
    assert len(got) == len(expected)
    if model == "digits":
        assert [output["label"] for output in got] == [output["label"] for output in expected]
        np.testing.assert_allclose(
            [output["probabilities"] for output in got],
            [output["probabilities"] for output in expected],
            atol=1e-6,
        )
    else:
        assert _cosines(got, expected).min() >= cosine


def _submit_batch(
    service: JobService, sqs: Any, resources: JobResources
) -> tuple[list[str], list[dict[str, Any]]]:
    job_ids = [submit(service, model, version, inputs) for model, version, inputs in BATCH]
    records = receive(sqs, resources, len(BATCH))
    assert {job_id_of(record) for record in records} == set(job_ids)
    return job_ids, records


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "each-alone"])
def test_every_job_of_a_mixed_batch_gets_its_own_outputs(
    environment: ExecutionEnvironment,
    service: JobService,
    sqs: Any,
    resources: JobResources,
    batched: bool,
) -> None:
    job_ids, records = _submit_batch(service, sqs, resources)

    failures = _worker(environment, service, batched=batched).process(records)

    assert failures == {}
    for job_id, (model, version, inputs) in zip(job_ids, BATCH, strict=True):
        job = _job(service, job_id)
        assert (job.status, job.attempts, job.error) == (JobStatus.SUCCEEDED, 1, None)
        assert job.result is not None and job.result_key is None, "small results stay inline"
        expected = _alone(environment, model, version, inputs)
        _assert_same_outputs(model, _outputs(service, job_id), expected, EXACT_COSINE)


def test_batched_and_unbatched_workers_agree(
    environment: ExecutionEnvironment, service: JobService, sqs: Any, resources: JobResources
) -> None:
    batched_ids, records = _submit_batch(service, sqs, resources)
    assert _worker(environment, service, batched=True).process(records) == {}
    alone_ids, records = _submit_batch(service, sqs, resources)
    assert _worker(environment, service, batched=False).process(records) == {}

    pairs = zip(batched_ids, alone_ids, BATCH, strict=True)
    for batched_id, alone_id, (model, _, _) in pairs:
        _assert_same_outputs(
            model, _outputs(service, batched_id), _outputs(service, alone_id), EXACT_COSINE
        )


def test_a_job_with_invalid_inputs_fails_alone_and_its_record_is_done(
    environment: ExecutionEnvironment, service: JobService, sqs: Any, resources: JobResources
) -> None:
    # The API checks inputs before it queues a job; the worker must not trust that.
    bad_text = submit(service, "embed", "2", ["a fine text", 3, "another"])
    good_text = submit(service, "embed", "2", ["a fine text", "another"])
    bad_row = submit(service, "digits", "1", [list(range(64)), list(range(63))])
    good_row = submit(service, "digits", "1", [list(range(64))])
    records = receive(sqs, resources, 4)

    failures = _worker(environment, service).process(records)

    assert failures == {}, "retrying cannot fix the inputs: the records are done"
    failed_text, failed_row = _job(service, bad_text), _job(service, bad_row)
    assert failed_text.status == JobStatus.FAILED
    assert failed_text.error == "invalid inputs: inputs[1]: expected a string, got a number"
    assert failed_row.status == JobStatus.FAILED
    assert failed_row.error == "invalid inputs: inputs[1]: expected 64 numbers, got 63"
    assert len(_outputs(service, good_text)) == 2
    assert len(_outputs(service, good_row)) == 1


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "each-alone"])
def test_inputs_the_model_overflows_on_fail_the_job_at_once_naming_the_input(
    environment: ExecutionEnvironment,
    service: JobService,
    sqs: Any,
    resources: JobResources,
    batched: bool,
) -> None:
    # Within float32, so the check passes; the model's arithmetic overflows on the run.
    # The row is in the job's second chunk of 64: the reason counts from the job's start.
    rows = [[1.0] * 64] * 80
    rows[70] = [3e38] * 64
    overflowing = submit(service, "digits", "1", rows)
    fine = submit(service, "digits", "1", [[2.0] * 64])
    records = receive(sqs, resources, 2)

    failures = _worker(environment, service, batched=batched).process(records)

    assert failures == {}, "retrying cannot fix the inputs: the records are done"
    failed = _job(service, overflowing)
    assert (failed.status, failed.attempts) == (JobStatus.FAILED, 1)
    assert failed.error == (
        "invalid inputs: inputs[70]: values too large for this model (its probabilities overflow)"
    )
    assert len(_outputs(service, fine)) == 1


def test_a_duplicate_delivery_of_a_finished_job_is_not_computed_again(
    environment: ExecutionEnvironment, service: JobService, sqs: Any, resources: JobResources
) -> None:
    job_id = submit(service, "embed", "2", _texts(3, 8))
    (record,) = receive(sqs, resources, 1)
    worker = _worker(environment, service)
    assert worker.process([record]) == {}
    finished = _job(service, job_id)

    assert worker.process([record]) == {}, "the duplicate record succeeds"
    assert _job(service, job_id) == finished, "no second attempt, same result, same times"
    assert finished.attempts == 1


def test_a_message_that_is_not_a_job_fails_its_record_only(
    environment: ExecutionEnvironment, service: JobService, sqs: Any, resources: JobResources
) -> None:
    for body in ("Hello from SQS!", '{"job_id": "x", "inputs": []}', "[1, 2]"):
        sqs.send_message(QueueUrl=resources.queue_url, MessageBody=body)
    job_id = submit(service, "digits", "1", _rows(2, 9))
    records = receive(sqs, resources, 4)
    by_body = {record["body"]: record["messageId"] for record in records}

    failures = _worker(environment, service).process(records)

    assert set(failures) == {
        by_body["Hello from SQS!"],
        by_body['{"job_id": "x", "inputs": []}'],
        by_body["[1, 2]"],
    }
    assert failures[by_body["Hello from SQS!"]].startswith("the message body is not JSON")
    assert failures[by_body['{"job_id": "x", "inputs": []}']] == (
        "the message lacks tenant, model, version"
    )
    assert failures[by_body["[1, 2]"]] == "the message body is not a JSON object"
    assert len(_outputs(service, job_id)) == 2


def test_a_job_whose_model_will_not_load_is_retried_with_backoff_then_given_up(
    environment: ExecutionEnvironment,
    service: JobService,
    sqs: Any,
    resources: JobResources,
    declaration: Declaration,
) -> None:
    job_id = submit(service, "embed", "9", ["no such version"])
    (record,) = receive(sqs, resources, 1)
    worker = _worker(environment, service)

    failures = worker.process([record])
    received_at = time.monotonic()

    assert set(failures) == {record["messageId"]}
    retrying = _job(service, job_id)
    assert (retrying.status, retrying.attempts) == (JobStatus.RUNNING, 1)
    # The runtime's own error, as it is: its type and message.
    assert retrying.error == failures[record["messageId"]]
    assert retrying.error.startswith("ModelUnavailableError: ")
    assert "embed:9" in retrying.error
    # Back after the first backoff (retry_delay_s), not after the 360 s visibility timeout.
    (again,) = receive(sqs, resources, 1)
    assert time.monotonic() - received_at < declaration.jobs.retry_delay_s + 3
    assert again["messageId"] == record["messageId"]
    assert again["attributes"]["ApproximateReceiveCount"] == "2"

    max_receive_count = declaration.jobs.max_receive_count
    again["attributes"]["ApproximateReceiveCount"] = str(max_receive_count)
    last = worker.process([again])

    assert set(last) == {record["messageId"]}, "the record still fails: SQS moves it to the DLQ"
    gave_up = _job(service, job_id)
    assert gave_up.status == JobStatus.FAILED
    assert gave_up.attempts == max_receive_count, "SQS's count of deliveries"
    assert gave_up.error is not None
    assert gave_up.error.startswith(f"gave up after {max_receive_count} deliveries: ")
    assert last[record["messageId"]] in gave_up.error
    assert gave_up.error.endswith("the message is in the dead-letter queue")


def test_a_large_result_is_stored_in_s3_behind_a_presigned_url(
    environment: ExecutionEnvironment,
    service: JobService,
    sqs: Any,
    resources: JobResources,
    declaration: Declaration,
) -> None:
    # 384 floats a text, ~4.5 KB of JSON: 80 texts pass the 256 KB inline limit.
    inputs = _texts(80, 10)
    job_id = submit(service, "embed", "2", inputs)
    (record,) = receive(sqs, resources, 1)

    assert _worker(environment, service).process([record]) == {}

    job = _job(service, job_id)
    assert job.status == JobStatus.SUCCEEDED
    assert job.result is None
    assert job.result_key == f"results/{TENANT}/{job_id}/{int(job.created_at * 1000)}.json"
    assert job.result_bytes is not None
    assert job.result_bytes > declaration.jobs.result_inline_max_kb * 1024
    stored = service.store.result(job)
    assert stored is not None and len(stored) == job.result_bytes
    outputs = orjson.loads(stored)["outputs"]
    assert len(outputs) == 80 and {len(vector) for vector in outputs} == {384}
    downloaded = httpx.get(service.store.result_url(job), timeout=10)
    assert downloaded.status_code == 200
    assert downloaded.content == stored


def test_large_inputs_travel_through_s3(
    environment: ExecutionEnvironment, service: JobService, sqs: Any, resources: JobResources
) -> None:
    rows = _rows(1500, 11)
    assert len(orjson.dumps(rows)) > INLINE_INPUTS_MAX_BYTES
    job_id = submit(service, "digits", "1", rows)
    (record,) = receive(sqs, resources, 1)
    body = orjson.loads(record["body"])
    assert "inputs" not in body
    created_ms = int(_job(service, job_id).created_at * 1000)
    assert body["inputs_key"] == f"inputs/{TENANT}/{job_id}/{created_ms}.json"

    assert _worker(environment, service).process([record]) == {}

    expected = _alone(environment, "digits", "1", rows)
    _assert_same_outputs("digits", _outputs(service, job_id), expected, EXACT_COSINE)


def test_inputs_gone_from_s3_fail_the_job_at_once_with_the_reason(
    environment: ExecutionEnvironment,
    service: JobService,
    sqs: Any,
    resources: JobResources,
    aws_url: str,
) -> None:
    from stratoserve.local.aws import client

    job_id = submit(service, "digits", "1", _rows(1500, 12))
    (record,) = receive(sqs, resources, 1)
    key = orjson.loads(record["body"])["inputs_key"]
    client("s3", aws_url).delete_object(Bucket=resources.bucket, Key=key)

    failures = _worker(environment, service).process([record])

    # S3 is strongly consistent: a retry cannot bring them back, so no retry.
    assert failures == {}
    job = _job(service, job_id)
    assert (job.status, job.error) == (
        JobStatus.FAILED,
        f"the job's inputs ({key}) are not in the bucket",
    )


def test_a_batched_run_that_fails_runs_each_job_alone(
    environment: ExecutionEnvironment,
    service: JobService,
    sqs: Any,
    resources: JobResources,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job_ids, records = _submit_batch(service, sqs, resources)
    worker = _worker(environment, service, batched=True)
    tried: list[int] = []

    def fails_together(runner: Any, group: list[Any], deadline: float | None) -> None:
        tried.append(len(group))
        raise RuntimeError("the batched run failed")

    monkeypatch.setattr(worker, "_run_together", fails_together)

    failures = worker.process(records)

    assert failures == {}
    assert sorted(tried) == [2, 2, 3], "each model group was first tried together"
    for job_id, (model, version, inputs) in zip(job_ids, BATCH, strict=True):
        job = _job(service, job_id)
        assert (job.status, job.attempts, job.error) == (JobStatus.SUCCEEDED, 1, None)
        expected = _alone(environment, model, version, inputs)
        _assert_same_outputs(model, _outputs(service, job_id), expected, EXACT_COSINE)


def _callback_worker(
    service: JobService, callback_queue: CallbackQueue, declaration: Declaration
) -> CallbackWorker:
    return CallbackWorker(
        jobs=lambda: service,
        queue=lambda: callback_queue,
        sender=CallbackSender(lambda: SIGNING_KEY, attempts=1, allow_loopback=True),
        attempts=declaration.jobs.callback_attempts,
        retry_delay_s=0,
        max_delay_s=declaration.visibility_timeout_s(),
    )


def test_a_job_failed_on_its_last_delivery_gets_its_callback(
    environment: ExecutionEnvironment,
    service: JobService,
    sqs: Any,
    resources: JobResources,
    declaration: Declaration,
    receiver: Receiver,
    callback_queue: CallbackQueue,
) -> None:
    job_id = service.submit(
        tenant=TENANT,
        api_version="v2",
        model="embed",
        version="9",  # will not load: every delivery fails
        inputs=["no such version"],
        correlation_id="test-callback",
        callback_url=receiver.url,
    ).job.job_id
    (record,) = receive(sqs, resources, 1)
    worker = _worker(environment, service, callbacks=lambda: callback_queue)

    retried = worker.process([record])

    assert set(retried) == {record["messageId"]}
    assert _job(service, job_id).callback is None, "the job will be retried: no callback yet"

    last = declaration.jobs.max_receive_count
    assert set(worker.process([_with_receive_count(record, last)])) == {record["messageId"]}
    assert _job(service, job_id).callback == {"state": "enqueued", "delivered": False}
    assert receiver.received == [], "queued, not sent by the job's worker"

    calls = receive(sqs, resources, 1, callbacks=True)
    assert _callback_worker(service, callback_queue, declaration).process(calls) == {}

    job = _job(service, job_id)
    assert job.status == JobStatus.FAILED
    assert job.callback == {"state": "delivered", "delivered": True, "attempts": 1, "status": 204}
    ((headers, body),) = receiver.received
    assert verify(tenant_secret(SIGNING_KEY, TENANT), headers[SIGNATURE_HEADER], body)
    sent = orjson.loads(body)
    assert (sent["job_id"], sent["status"], sent["attempts"]) == (job_id, "failed", last)
    assert sent["error"] == job.error
    assert sent["error"].startswith(f"gave up after {last} deliveries: ModelUnavailableError: ")


def test_the_batch_does_not_wait_for_its_callbacks(
    environment: ExecutionEnvironment,
    service: JobService,
    sqs: Any,
    resources: JobResources,
    callback_queue: CallbackQueue,
) -> None:
    """A receiver that takes its time (here: never answers) costs the batch nothing."""
    silent = socket.create_server(("127.0.0.1", 0))  # accepts, never answers
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/hooks"
    try:
        job_ids = [
            service.submit(
                tenant=TENANT,
                api_version="v2",
                model="digits",
                version="1",
                inputs=_rows(1, seed),
                correlation_id=f"test-slow-callback-{seed}",
                callback_url=url,
            ).job.job_id
            for seed in range(3)
        ]
        records = receive(sqs, resources, 3)
        worker = _worker(environment, service, callbacks=lambda: callback_queue)

        started = time.monotonic()
        assert worker.process(records, deadline=time.monotonic() + 60) == {}
        took = time.monotonic() - started
    finally:
        silent.close()

    assert took < 2.0, f"the batch took {took:.1f} s"
    for job_id in job_ids:
        job = _job(service, job_id)
        assert job.status == JobStatus.SUCCEEDED
        assert job.callback == {"state": "enqueued", "delivered": False}
    queued = receive(sqs, resources, 3, callbacks=True)
    assert sorted(job_id_of(record) for record in queued) == sorted(job_ids)


def test_a_worker_that_died_after_storing_the_result_still_gets_the_callback_out(
    environment: ExecutionEnvironment,
    service: JobService,
    sqs: Any,
    resources: JobResources,
    declaration: Declaration,
    receiver: Receiver,
    callback_queue: CallbackQueue,
) -> None:
    job_id = service.submit(
        tenant=TENANT,
        api_version="v2",
        model="digits",
        version="1",
        inputs=_rows(1, 9),
        correlation_id="test-died",
        callback_url=receiver.url,
    ).job.job_id
    (record,) = receive(sqs, resources, 1)
    # The first delivery's worker claimed the job, stored its result, and died before it
    # queued the callback: SQS delivers the message again once its visibility times out.
    claimed = service.store.start(TENANT, job_id, lease_s=60, delivery=1)
    assert claimed is not None
    assert service.store.succeed(claimed, orjson.dumps({"outputs": [{"label": 1}]}))
    worker = _worker(environment, service, callbacks=lambda: callback_queue)

    assert worker.process([_with_receive_count(record, 2)]) == {}, "nothing to run"
    calls = receive(sqs, resources, 1, callbacks=True)
    assert _callback_worker(service, callback_queue, declaration).process(calls) == {}

    ((_, body),) = receiver.received
    assert orjson.loads(body)["job_id"] == job_id
    assert _job(service, job_id).callback == {
        "state": "delivered",
        "delivered": True,
        "attempts": 1,
        "status": 204,
    }
    # A third delivery of the same message (SQS delivers at least once) queues nothing more.
    assert worker.process([_with_receive_count(record, 3)]) == {}
    assert (
        sqs.receive_message(QueueUrl=resources.callbacks_queue_url, WaitTimeSeconds=0).get(
            "Messages", []
        )
        == []
    )


def test_a_batch_with_no_time_left_is_deferred_not_failed(
    environment: ExecutionEnvironment, service: JobService, sqs: Any, resources: JobResources
) -> None:
    job_ids = [
        submit(service, "embed", "2", _texts(3, 13)),
        submit(service, "embed", "2", _texts(4, 14)),
        submit(service, "digits", "1", _rows(2, 15)),
    ]
    records = receive(sqs, resources, 3)
    worker = _worker(environment, service)
    assert worker.run_margin_s > 0.5

    deferred = worker.process(records, deadline=time.monotonic() + 0.5)
    deferred_at = time.monotonic()

    assert deferred == {record["messageId"]: DEFERRED for record in records}
    for job_id in job_ids:
        job = _job(service, job_id)
        assert (job.status, job.error, job.result) == (JobStatus.RUNNING, None, None), (
            "not failed, and no error noted: it did not run"
        )
    # Back at once (visibility 0), not after the retry backoff.
    again = receive(sqs, resources, 3)
    assert time.monotonic() - deferred_at < 1.5
    assert {record["attributes"]["ApproximateReceiveCount"] for record in again} == {"2"}

    assert worker.process(again) == {}
    for job_id in job_ids:
        job = _job(service, job_id)
        assert (job.status, job.attempts, job.error) == (JobStatus.SUCCEEDED, 2, None)


def test_a_large_job_that_runs_out_of_time_fails_its_record_with_a_timeout(
    environment: ExecutionEnvironment, service: JobService, sqs: Any, resources: JobResources
) -> None:
    inputs = _texts(30 * CHUNK_INPUTS, 16)  # about 10 s of int8 chunks on one CPU
    job_id = submit(service, "embed", "2", inputs)
    (record,) = receive(sqs, resources, 1)
    worker = _worker(environment, service)

    # Time to start the job, and to run about a second of it.
    failures = worker.process([record], deadline=time.monotonic() + worker.run_margin_s + 1.0)

    timeout_s = environment.function.timeout_s
    reason = failures[record["messageId"]]
    assert re.fullmatch(
        rf"TimeoutError: the worker's {timeout_s} s ran out after \d+ of {len(inputs)} inputs",
        reason,
    ), reason
    job = _job(service, job_id)
    assert (job.status, job.attempts, job.error) == (JobStatus.RUNNING, 1, reason)
    assert job.result is None


def test_a_cancelled_job_s_message_is_dropped_without_running_it(
    environment: ExecutionEnvironment, service: JobService, sqs: Any, resources: JobResources
) -> None:
    job_id = submit(service, "embed", "2", _texts(3, 17))
    cancelled = service.store.cancel(TENANT, job_id)
    assert cancelled is not None
    (record,) = receive(sqs, resources, 1)

    failures = _worker(environment, service).process([record])

    assert failures == {}, "the record succeeds: SQS deletes the message"
    assert _job(service, job_id) == cancelled, "still cancelled, never started"
    assert (cancelled.attempts, cancelled.started_at, cancelled.result) == (0, None, None)
