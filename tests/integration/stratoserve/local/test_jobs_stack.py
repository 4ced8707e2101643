"""Jobs end to end on the local stack, as a client (stratoserve.client) and an operator see
them: the API answers 202, the poller feeds the worker's local environments from SQS (moto), results
land in DynamoDB/S3, and faults (a killed worker, a poison message, a duplicate delivery)
lose nothing and store nothing twice."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from functions.runtime.callbacks import SIGNATURE_HEADER, tenant_secret, verify
from functions.runtime.jobs import Job, JobMessage, JobStatus
from stratoserve.client import Client, UnprocessableError
from stratoserve.client import Job as ClientJob
from stratoserve.declaration import load_declaration
from stratoserve.jobs import JobAdmin, JobResources
from stratoserve.local.aws import client
from tests.conftest import DECLARATION_FILE, ROOT
from tests.integration.stratoserve.local.dev_stack import (
    KEY,
    Stack,
    cli,
    create_key,
    lines,
    start_stack,
    stop_stack,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

WORKER_TIMEOUT_S = 3
"""The test declaration's worker timeout: its queue's visibility timeout is 6x this."""

WORDS = [
    "the",
    "a",
    "man",
    "woman",
    "child",
    "dog",
    "cat",
    "bird",
    "eats",
    "runs",
    "reads",
    "sings",
    "food",
    "bread",
    "music",
    "book",
    "park",
    "city",
    "river",
    "quickly",
    "slowly",
    "happily",
    "today",
    "yesterday",
    "under",
    "over",
    "near",
    "green",
    "red",
    "small",
    "big",
]


def _sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)) + f" #{rng.randrange(10**6)}"


def _digits_row(rng: random.Random) -> list[int]:
    return [rng.randrange(17) for _ in range(64)]


def _test_declaration(state: Path) -> Path:
    """stratoserve.toml with a short worker timeout and quick retries, so the fault tests
    wait seconds, not minutes; models from the repository's build/."""
    text = DECLARATION_FILE.read_text()
    changes = {
        'models_dir = "build/models"': f'models_dir = "{ROOT / "build" / "models"}"',
        "[functions.worker]\nmemory_mb = 2048\ntimeout_s = 180": (
            f"[functions.worker]\nmemory_mb = 2048\ntimeout_s = {WORKER_TIMEOUT_S}"
        ),
        "retry_delay_s = 2 ": "retry_delay_s = 0.2 ",
    }
    for old, new in changes.items():
        assert old in text, f"stratoserve.toml changed: update this test's {old!r}"
        text = text.replace(old, new)
    path = state / "stratoserve.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def stack(built_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state = tmp_path_factory.mktemp("jobs-state")
    running = start_stack(state, _test_declaration(state))
    yield running
    stop_stack(running)


@pytest.fixture(scope="module")
def api(stack: Stack) -> Iterator[Client]:
    """The stack as a tenant's code sees it: the Python client, with the dev key."""
    with Client(stack.url, KEY, timeout_s=60) as client:
        yield client


@pytest.fixture(scope="module")
def admin(stack: Stack) -> JobAdmin:
    """The operator's view of the stack's job store and queues (boto3 against its moto)."""
    record = json.loads((stack.state / "stack.json").read_text())
    assert stack.config is not None
    return JobAdmin.connect(
        load_declaration(stack.config),
        JobResources(**record["jobs"]),
        lambda service: client(service, record["aws_url"], record["token"]),
    )


def _submit(api: Client, body: dict[str, Any]) -> ClientJob:
    return api.submit(body["model"], body["inputs"], callback_url=body.get("callback_url"))


def _wait(admin: JobAdmin, job_ids: set[str], timeout_s: float = 180) -> dict[str, Job]:
    """Every job, once all have finished; fails with the stragglers' states otherwise.
    Reads as lightly as it can (moto serves the stack too): one query of the tenant's jobs
    while many are pending, then a read per job."""
    deadline = time.monotonic() + timeout_s
    finished: dict[str, Job] = {}
    while True:
        pending = job_ids - set(finished)
        if len(pending) > 20:
            seen = [job for job in admin.jobs("dev") if job.job_id in pending]
        else:
            seen = [job for job in map(lambda job_id: admin.find(job_id, "dev"), pending) if job]
        finished.update({job.job_id: job for job in seen if job.finished})
        if len(finished) == len(job_ids):
            return finished
        if time.monotonic() > deadline:
            waiting = [(job.job_id, str(job.status)) for job in seen if not job.finished]
            pytest.fail(f"{len(job_ids) - len(finished)} job(s) unfinished: {waiting[:5]}")
        time.sleep(0.5 if len(pending) <= 20 else 2)


def _results(api: Client, job_ids: list[str]) -> dict[str, list[Any]]:
    """Each finished job's outputs as the client reads them: from the answer, or from its
    presigned URL."""

    def fetch(job_id: str) -> tuple[str, list[Any]]:
        return job_id, api.job(job_id).wait(timeout_s=0, progress=False).outputs

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(pool.map(fetch, job_ids))


def _inline(api: Client, model: str, inputs: list[Any], chunk: int) -> list[Any]:
    outputs: list[Any] = []
    for start in range(0, len(inputs), chunk):
        outputs.extend(api.predict(model, inputs[start : start + chunk]).outputs)
    return outputs


def _cosine(a: list[float], b: list[float]) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def _assert_equal_to_inline(
    api: Client, submitted: dict[str, dict[str, Any]], results: dict[str, list[Any]]
) -> None:
    texts = sorted(
        {text for body in submitted.values() if body["model"] == "embed" for text in body["inputs"]}
    )
    rows = [
        row for body in submitted.values() if body["model"] == "digits" for row in body["inputs"]
    ]
    vectors = dict(zip(texts, _inline(api, "embed", texts, 64), strict=True))
    labels = [output["label"] for output in _inline(api, "digits", rows, 256)] if rows else []
    expected_labels = iter(labels)
    worst = 1.0
    for job_id, body in submitted.items():
        outputs = results[job_id]
        assert len(outputs) == len(body["inputs"])
        if body["model"] == "embed":
            for text, vector in zip(body["inputs"], outputs, strict=True):
                worst = min(worst, _cosine(vector, vectors[text]))
        else:
            for output in outputs:
                assert output["label"] == next(expected_labels)
    assert worst >= 0.9999


def test_500_jobs_all_succeed_with_the_inline_results(api: Client, admin: JobAdmin) -> None:
    rng = random.Random(500)
    bodies = []
    for number in range(500):
        if number % 5 == 4:
            bodies.append({"model": "digits", "inputs": [_digits_row(rng) for _ in range(2)]})
        else:
            count = rng.randint(1, 3)
            bodies.append(
                {
                    "model": "embed",
                    "inputs": [_sentence(rng, rng.randint(3, 12)) for _ in range(count)],
                }
            )

    with ThreadPoolExecutor(max_workers=8) as pool:
        accepted = list(pool.map(lambda body: _submit(api, body), bodies))
    submitted = {job.job_id: body for job, body in zip(accepted, bodies, strict=True)}
    assert len(submitted) == 500
    assert all(job.status == "queued" for job in accepted)

    finished = _wait(admin, set(submitted))

    assert {job.status for job in finished.values()} == {JobStatus.SUCCEEDED}
    _assert_equal_to_inline(api, submitted, _results(api, list(submitted)))


def test_an_idempotency_key_names_one_job(api: Client, admin: JobAdmin) -> None:
    texts = ["submitted twice, run once"]
    first = api.submit("embed", texts, idempotency_key="order-17")
    again = api.submit("embed", texts, idempotency_key="order-17")
    with pytest.raises(UnprocessableError) as other:
        api.submit("embed", ["something else"], idempotency_key="order-17")

    assert again.job_id == first.job_id
    assert "Idempotency-Key was used for a different request" in other.value.message
    job_id = first.job_id
    assert _wait(admin, {job_id})[job_id].status == JobStatus.SUCCEEDED
    dev_jobs = [job for job in admin.jobs("dev") if job.job_id == job_id]
    assert len(dev_jobs) == 1


def test_another_tenants_job_is_404_like_a_missing_one(stack: Stack, api: Client) -> None:
    job_id = _submit(api, {"model": "digits", "inputs": [_digits_row(random.Random(1))]}).job_id
    other_key = create_key(stack, "globex", "pro")["key"]

    theirs = stack.client.get(f"/v2/jobs/{job_id}", headers={"x-api-key": other_key})
    missing = stack.client.get("/v2/jobs/no-such-job", headers={"x-api-key": other_key})
    cancel = stack.client.delete(f"/v2/jobs/{job_id}", headers={"x-api-key": other_key})

    assert theirs.status_code == missing.status_code == cancel.status_code == 404
    assert theirs.json() == {"message": f"no job {job_id}"}
    assert missing.json() == {"message": "no job no-such-job"}
    assert stack.client.get(f"/v2/jobs/{job_id}", headers={"x-api-key": KEY}).status_code == 200


def test_a_predict_request_over_the_inline_limit_becomes_a_job(
    stack: Stack, api: Client, admin: JobAdmin
) -> None:
    rng = random.Random(65)
    texts = [_sentence(rng, 6) for _ in range(65)]  # routing.embed.inline_max_inputs = 64

    response = stack.post("/v2/predict/embed", {"inputs": texts})

    assert response.status_code == 202
    job_id = response.json()["job_id"]
    assert response.headers["location"] == f"/v2/jobs/{job_id}"
    _wait(admin, {job_id})
    outputs = _results(api, [job_id])[job_id]
    inline = _inline(api, "embed", texts, 64)
    assert min(_cosine(a, b) for a, b in zip(outputs, inline, strict=True)) >= 0.9999
    # The client waits for such an answer itself and returns the outputs the same way.
    through_client = api.predict("embed", texts).outputs
    assert min(_cosine(a, b) for a, b in zip(through_client, inline, strict=True)) >= 0.9999


def test_one_correlation_id_from_the_request_to_the_worker(
    stack: Stack, api: Client, admin: JobAdmin
) -> None:
    accepted = _submit(api, {"model": "embed", "inputs": ["follow me through SQS"]})
    _wait(admin, {accepted.job_id})

    deadline = time.monotonic() + 10  # the worker's stdout reaches the log file a bit later
    while time.monotonic() < deadline:
        worker = [
            line
            for line in lines(stack)
            if line.get("function_name") == "worker" and line.get("job_id") == accepted.job_id
        ]
        if any(line["message"] == "job succeeded" for line in worker):
            break
        time.sleep(0.2)
    assert {line["message"] for line in worker} >= {"job started", "job succeeded"}
    assert {line["correlation_id"] for line in worker} == {accepted.request_id}
    api_lines = [
        line
        for line in lines(stack)
        if line.get("message") == "job accepted" and line.get("job_id") == accepted.job_id
    ]
    assert api_lines[0]["request_id"] == accepted.request_id


def test_a_duplicate_delivery_is_not_computed_or_stored_again(
    stack: Stack, api: Client, admin: JobAdmin
) -> None:
    accepted = _submit(api, {"model": "embed", "inputs": ["delivered twice"]})
    job_id = accepted.job_id
    before = _wait(admin, {job_id})[job_id]
    message = JobMessage(
        tenant=before.tenant,  # the dev tenant's id
        job_id=job_id,
        model="embed",
        version="2",
        correlation_id=accepted.request_id or "",
        inputs=["delivered twice"],
    )

    admin._sqs.send_message(
        QueueUrl=admin.resources.queue_url, MessageBody=message.encode().decode()
    )

    deadline = time.monotonic() + 30
    while not any(
        line.get("job_id") == job_id and "delivery dropped" in line.get("message", "")
        for line in lines(stack)
    ):
        assert time.monotonic() < deadline, "the duplicate was never delivered"
        time.sleep(0.2)
    after = admin.find(job_id, "dev")
    assert after is not None
    assert (after.status, after.attempts, after.result, after.finished_at) == (
        JobStatus.SUCCEEDED,
        1,
        before.result,
        before.finished_at,
    )


def test_a_poison_message_ends_in_the_dlq_with_its_job_failed(
    stack: Stack, admin: JobAdmin
) -> None:
    # A job for a model version this worker does not have (as after a deploy that skipped
    # the worker): every delivery fails, until SQS gives up on it.
    now = time.time()
    poison = Job(
        tenant="dev",
        job_id="poison-0001",
        status=JobStatus.QUEUED,
        model="embed",
        version="9",
        api_version="v2",
        inputs=1,
        correlation_id="poison-correlation",
        created_at=now,
        updated_at=now,
        expires_at=int(now + 3600),
        request_hash="-",
    )
    admin.store.create(poison)
    message = JobMessage("dev", poison.job_id, "embed", "9", "poison-correlation", inputs=["x"])
    admin._sqs.send_message(
        QueueUrl=admin.resources.queue_url, MessageBody=message.encode().decode()
    )
    admin._sqs.send_message(QueueUrl=admin.resources.queue_url, MessageBody="not a job at all")

    failed = _wait(admin, {poison.job_id}, timeout_s=60)[poison.job_id]

    assert failed.status == JobStatus.FAILED
    assert failed.attempts == 5
    assert failed.error is not None
    assert "gave up after 5 deliveries" in failed.error
    assert "embed" in failed.error and "dead-letter queue" in failed.error
    deadline = time.monotonic() + 30
    while _dead_letters(admin) < 2:  # the job and the stranger, each after 5 deliveries
        assert time.monotonic() < deadline, "the poison messages never reached the DLQ"
        time.sleep(0.5)

    redriven = cli(stack, "jobs", "redrive", "--json")

    assert redriven.returncode == 0, redriven.stderr
    outcome = json.loads(redriven.stdout)
    assert outcome["requeued"] == [poison.job_id]
    assert outcome["not_jobs"] == 1
    requeued = admin.find(poison.job_id, "dev")
    assert requeued is not None
    assert requeued.redrives == 1
    assert requeued.status in (JobStatus.QUEUED, JobStatus.RUNNING)


def _dead_letters(admin: JobAdmin) -> int:
    attributes = admin._sqs.get_queue_attributes(
        QueueUrl=admin.resources.dead_letter_queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def test_a_worker_killed_mid_batch_loses_nothing_and_stores_nothing_twice(
    stack: Stack, api: Client, admin: JobAdmin
) -> None:
    rng = random.Random(9)
    bodies = [
        {"model": "embed", "inputs": [_sentence(rng, 20) for _ in range(8)]} for _ in range(30)
    ]
    accepted = [_submit(api, body) for body in bodies]
    submitted = {job.job_id: body for job, body in zip(accepted, bodies, strict=True)}

    # The first job is in the first batch: once it runs, that batch is in the worker.
    first = accepted[0]
    deadline = time.monotonic() + 60
    while first.refresh().status == "queued":
        assert time.monotonic() < deadline, "no job started"
        time.sleep(0.02)
    victims = stack.environments("worker")
    assert victims
    for pid in victims:
        os.kill(pid, signal.SIGKILL)

    finished = _wait(admin, set(submitted), timeout_s=6 * WORKER_TIMEOUT_S + 120)

    assert {job.status for job in finished.values()} == {JobStatus.SUCCEEDED}
    assert max(job.attempts for job in finished.values()) >= 2, "the kill interrupted nothing"
    stored = Counter(
        line["job_id"]
        for line in lines(stack)
        if line.get("message") == "job succeeded" and line.get("job_id") in submitted
    )
    assert max(stored.values()) == 1, "a job's result was stored twice"
    _assert_equal_to_inline(api, submitted, _results(api, list(submitted)))


def test_the_jobs_cli_lists_and_shows_jobs(stack: Stack, api: Client) -> None:
    job_id = _submit(api, {"model": "digits", "inputs": [_digits_row(random.Random(3))]}).job_id
    time.sleep(0.1)

    listed = cli(stack, "jobs", "list", "--tenant", "dev", "--json")
    shown = cli(stack, "jobs", "show", job_id, "--json")
    missing = cli(stack, "jobs", "show", "no-such-job")

    assert listed.returncode == shown.returncode == 0, listed.stderr + shown.stderr
    assert job_id in [job["job_id"] for job in json.loads(listed.stdout)]
    assert json.loads(shown.stdout)["tenant"] == "dev"
    assert json.loads(shown.stdout)["tenant_id"].startswith("t-"), "stored by the tenant's id"
    assert missing.returncode == 2
    assert "no job no-such-job" in missing.stderr


def test_a_finished_job_is_posted_to_its_callback_signed_for_its_tenant(
    stack: Stack, api: Client, admin: JobAdmin
) -> None:
    import http.server
    import threading

    received: list[tuple[bytes, str]] = []
    # The first delivery is refused: the callbacks queue brings it back to the worker.
    answers = iter([503, 200])

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            received.append((body, self.headers[SIGNATURE_HEADER]))
            self.send_response(next(answers))
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        job_id = _submit(
            api, {"model": "embed", "inputs": ["call me back"], "callback_url": url}
        ).job_id
        deadline = time.monotonic() + 30
        while len(received) < 2:
            assert time.monotonic() < deadline, f"{len(received)} callback(s) arrived"
            time.sleep(0.1)
    finally:
        server.shutdown()

    secret = json.loads(cli(stack, "jobs", "callback-secret", "--tenant", "dev", "--json").stdout)
    body, signed = received[-1]
    assert (secret["tenant_id"][:2], secret["secret_version"]) == ("t-", 1)
    assert verify(secret["callback_secret"], signed, body)
    assert not verify(tenant_secret(b"another key", "dev"), signed, body)
    posted = json.loads(body)
    assert (posted["job_id"], posted["status"]) == (job_id, "succeeded")
    assert len(posted["result"]["outputs"]) == 1
    deadline = time.monotonic() + 10
    while (job := admin.find(job_id, "dev")) is None or job.callback is None:
        assert time.monotonic() < deadline, "the callback's outcome was never recorded"
        time.sleep(0.1)
    assert job.callback == {"state": "delivered", "delivered": True, "attempts": 2, "status": 200}
