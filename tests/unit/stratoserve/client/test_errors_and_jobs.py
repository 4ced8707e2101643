"""The client's reading of answers, against httpx's mock transport (the answers the API
gives, byte for byte): typed errors with the API's message, a job waited for with backoff
until its outputs or its reason."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from stratoserve.client import (
    AsyncClient,
    Client,
    ConflictError,
    ForbiddenError,
    JobCancelledError,
    JobFailedError,
    JobTimeoutError,
    QuotaExceededError,
    ServerError,
    ThrottledError,
    UnprocessableError,
)
from stratoserve.client.retries import Retries

JOB = {"job_id": "j1", "status": "queued", "status_url": "/v2/jobs/j1"}
MODEL = {"name": "embed", "version": "2"}


def _client(
    answers: list[tuple[int, Any]], seen: list[httpx.Request], max_retries: int = 0
) -> Client:
    def reply(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        status, body = answers.pop(0)
        if isinstance(body, Exception):
            raise body
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.Response(status, content=content)

    client = Client(
        "http://api.test/prod/",
        "the-key",
        max_retries=max_retries,
        transport=httpx.MockTransport(reply),
    )
    client.retries = Retries(attempts=max_retries + 1, first_s=0.001, most_s=0.01)
    return client


@pytest.mark.parametrize(
    ("status", "body", "kind", "message"),
    [
        (403, {"message": "Forbidden"}, ForbiddenError, "Forbidden"),
        (429, {"message": "Too Many Requests"}, ThrottledError, "Too Many Requests"),
        (429, {"message": "Limit Exceeded"}, QuotaExceededError, "Limit Exceeded"),
        (
            422,
            {"message": "inputs[3]: expected 64 numbers"},
            UnprocessableError,
            "inputs[3]: expected 64 numbers",
        ),
        (502, b"Bad Gateway", ServerError, "Bad Gateway"),
    ],
)
def test_an_error_answer_is_a_typed_error_with_the_apis_message(
    status: int, body: Any, kind: type[Exception], message: str
) -> None:
    seen: list[httpx.Request] = []
    client = _client([(status, body)], seen)
    with pytest.raises(kind) as raised:
        client.predict("digits", [[0] * 64])
    assert raised.value.message == message  # type: ignore[attr-defined]
    assert raised.value.status == status  # type: ignore[attr-defined]
    # The stage prefix is kept, the key goes in its header (and nowhere in the message).
    assert str(seen[0].url) == "http://api.test/prod/v2/predict/digits"
    assert seen[0].headers["x-api-key"] == "the-key"
    assert "the-key" not in str(raised.value)


def test_throttles_outages_and_lost_connections_are_retried_then_answered() -> None:
    seen: list[httpx.Request] = []
    answers: list[tuple[int, Any]] = [
        (429, {"message": "Too Many Requests"}),
        (503, {"message": "the job store could not be written (ConnectError); try again"}),
        (0, httpx.ConnectError("connection refused")),
        (202, JOB),
    ]
    client = _client(answers, seen, max_retries=3)

    job = client.submit("embed", ["a"])

    assert job.job_id == "j1"
    # Every try names the same job: the client made up one Idempotency-Key for them.
    keys = {request.headers["idempotency-key"] for request in seen}
    assert len(seen) == 4 and len(keys) == 1 and keys != {""}


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (429, {"message": "Limit Exceeded"}, QuotaExceededError),  # the quota stays spent
        (500, {"message": "Internal server error"}, ServerError),  # a bug stays a bug
        (422, {"message": "inputs[0]: text is empty"}, UnprocessableError),
    ],
)
def test_answers_a_retry_cannot_change_are_raised_at_once(
    status: int, body: Any, kind: type[Exception]
) -> None:
    seen: list[httpx.Request] = []
    client = _client([(status, body)], seen, max_retries=3)
    with pytest.raises(kind):
        client.predict("embed", [""])
    assert len(seen) == 1


def test_the_last_answer_is_raised_once_the_retries_are_spent() -> None:
    seen: list[httpx.Request] = []
    client = _client([(503, {"message": "try again"})] * 3, seen, max_retries=2)
    with pytest.raises(ServerError, match="try again"):
        client.predict("digits", [[0] * 64])
    assert len(seen) == 3


def test_retry_after_is_honoured_within_the_cap() -> None:
    policy = Retries(attempts=3, first_s=0.5, most_s=8.0)
    assert policy.delay(0, httpx.Response(429, headers={"retry-after": "2"})) == 2.0
    assert policy.delay(0, httpx.Response(429, headers={"retry-after": "120"})) == 8.0
    assert 0 <= policy.delay(3, httpx.Response(503)) <= 4.0  # full jitter up to 0.5 x 2^3
    # An HTTP date, also in RFC 5322's "-0000" form (a naive datetime once parsed).
    for date in ("Wed, 21 Oct 2015 07:28:00 GMT", "Wed, 21 Oct 2015 07:28:00 -0000"):
        assert policy.delay(0, httpx.Response(503, headers={"retry-after": date})) == 0.0


def test_a_cancel_that_conflicts_is_final() -> None:
    policy = Retries(attempts=3)
    running = httpx.Response(409, json={"message": "job j1 is not queued (status: running)"})
    assert policy.next_delay(0, running) is None
    assert policy.next_delay(0, httpx.Response(503)) is not None
    assert policy.next_delay(2, httpx.Response(503)) is None  # the third try was the last


def test_every_predict_carries_an_idempotency_key_of_its_own() -> None:
    seen: list[httpx.Request] = []
    answer = {"outputs": [7], "model": {"name": "digits", "version": "1"}, "api_version": "v2"}
    client = _client([(200, answer), (200, answer)], seen)
    client.predict("digits", [[0] * 64])
    client.predict("digits", [[0] * 64])
    keys = [request.headers.get("idempotency-key") for request in seen]
    assert all(keys) and keys[0] != keys[1]


def test_a_job_is_polled_with_backoff_until_its_outputs() -> None:
    seen: list[httpx.Request] = []
    done = {**JOB, "status": "succeeded", "model": MODEL, "result": {"outputs": [[0.1], [0.2]]}}
    client = _client(
        [
            (202, JOB),
            (200, {**JOB, "status": "queued"}),
            (200, {**JOB, "status": "running"}),
            (200, done),
        ],
        seen,
    )
    job = client.submit("embed", ["a", "b"], idempotency_key="once")
    prediction = job.wait(poll_s=0.01, progress=False)
    assert prediction.outputs == [[0.1], [0.2]]
    assert (prediction.model.name, prediction.model.version) == ("embed", "2")
    assert seen[0].headers["idempotency-key"] == "once"
    assert [request.url.path for request in seen[1:]] == ["/prod/v2/jobs/j1"] * 3


def test_a_failed_job_raises_its_reason() -> None:
    failed = {**JOB, "status": "failed", "model": MODEL, "error": "the GPU call failed: OOM"}
    client = _client([(202, JOB), (200, failed)], [])
    with pytest.raises(JobFailedError, match="the GPU call failed: OOM"):
        client.submit("embed", ["a"]).wait(progress=False)


def test_a_queued_job_is_cancelled_and_a_running_one_refuses_with_the_apis_reason() -> None:
    seen: list[httpx.Request] = []
    cancelled = {**JOB, "status": "cancelled", "model": MODEL}
    reason = "job j1 is not queued (status: running); only a queued job can be cancelled"
    client = _client([(202, JOB), (200, cancelled), (409, {"message": reason})], seen)
    job = client.submit("embed", ["a"])

    assert job.cancel().status == "cancelled"
    with pytest.raises(ConflictError) as refused:
        job.cancel()
    assert refused.value.message == reason
    assert [(request.method, request.url.path) for request in seen[1:]] == [
        ("DELETE", "/prod/v2/jobs/j1")
    ] * 2


def test_waiting_on_a_job_cancelled_elsewhere_ends_at_once() -> None:
    cancelled = {**JOB, "status": "cancelled", "model": MODEL}
    client = _client([(202, JOB), (200, {**JOB, "status": "queued"}), (200, cancelled)], [])
    with pytest.raises(JobCancelledError, match="job j1 was cancelled"):
        client.submit("embed", ["a"]).wait(poll_s=0.01, progress=False)


def test_a_job_carries_the_id_of_the_request_that_submitted_it() -> None:
    def reply(request: httpx.Request) -> httpx.Response:
        return httpx.Response(202, json=JOB, headers={"x-request-id": "req-42"})

    client = Client("http://api.test", "k", transport=httpx.MockTransport(reply))
    assert client.submit("embed", ["a"]).request_id == "req-42"


def test_waiting_gives_up_at_its_timeout_and_the_job_goes_on() -> None:
    running = {**JOB, "status": "running"}
    client = _client([(202, JOB)] + [(200, running)] * 50, [])
    job = client.submit("embed", ["a"])
    with pytest.raises(JobTimeoutError, match="still running"):
        job.wait(timeout_s=0.05, poll_s=0.01, most_s=0.01, progress=False)


async def _async_predict() -> list[Any]:
    answers = [
        (200, {"outputs": [7], "model": {"name": "digits", "version": "1"}, "api_version": "v1"})
    ]

    def reply(request: httpx.Request) -> httpx.Response:
        status, body = answers.pop(0)
        return httpx.Response(status, json=body, headers={"x-request-id": "r-1"})

    async with AsyncClient(
        "http://api.test", "k", api_version="v1", transport=httpx.MockTransport(reply)
    ) as client:
        prediction = await client.predict("digits", [[0] * 64])
    assert prediction.request_id == "r-1" and prediction.api_version == "v1"
    return prediction.outputs


def test_the_async_client_reads_the_same_answers() -> None:
    import asyncio

    assert asyncio.run(_async_predict()) == [7]


async def _async_job_lifecycle() -> tuple[str, str, list[Any]]:
    done = {**JOB, "status": "succeeded", "model": MODEL, "result": {"outputs": [[0.5]]}}
    answers = [(200, {**JOB, "status": "running"}), (200, done), (200, done)]

    def reply(request: httpx.Request) -> httpx.Response:
        status, body = answers.pop(0)
        return httpx.Response(status, json=body)

    async with AsyncClient("http://api.test", "k", transport=httpx.MockTransport(reply)) as client:
        job = await client.job("j1")
        first = job.status
        prediction = await job.wait(poll_s=0.01)
    return first, job.status, prediction.outputs


def test_the_async_client_follows_a_job_by_id() -> None:
    import asyncio

    assert asyncio.run(_async_job_lifecycle()) == ("running", "succeeded", [[0.5]])


async def _async_retried_submit() -> tuple[str, int]:
    answers = [(503, {"message": "try again"}), (0, httpx.ReadTimeout("slow")), (202, JOB)]
    seen: list[httpx.Request] = []

    def reply(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        status, body = answers.pop(0)
        if isinstance(body, Exception):
            raise body
        return httpx.Response(status, json=body)

    async with AsyncClient(
        "http://api.test", "k", max_retries=2, transport=httpx.MockTransport(reply)
    ) as client:
        client.retries = Retries(attempts=3, first_s=0.001, most_s=0.01)
        job = await client.submit("embed", ["a"])
    assert len({request.headers["idempotency-key"] for request in seen}) == 1
    return job.job_id, len(seen)


def test_the_async_client_retries_the_same_way() -> None:
    import asyncio

    assert asyncio.run(_async_retried_submit()) == ("j1", 3)
