"""The worker against a real moto server: the job resources the local stack creates, jobs
submitted as the API submits them, and SQS records as Lambda's event source builds them."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from functions.runtime.callback_queue import CallbackQueue
from functions.runtime.job_queue import JobQueue
from functions.runtime.job_service import JobService
from functions.runtime.job_store import JobStore
from stratoserve.jobs import JobResources, create_job_resources
from stratoserve.local.aws import REGION, LocalAws, client
from stratoserve.local.poller import sqs_record
from tests.integration.stratoserve.moto import reset_moto

if TYPE_CHECKING:
    from collections.abc import Iterator

    from stratoserve.declaration import Declaration

TENANT = "acme"


@pytest.fixture(scope="module")
def aws_url() -> Iterator[str]:
    aws = LocalAws()
    url = aws.start()
    try:
        yield url
    finally:
        reset_moto(url)  # moto keeps its state per process, across server instances
        aws.stop()


@pytest.fixture(scope="module")
def sqs(aws_url: str) -> Any:
    return client("sqs", aws_url)


@pytest.fixture(scope="module")
def resources(declaration: Declaration, aws_url: str) -> JobResources:
    return create_job_resources(declaration, lambda service: client(service, aws_url))


@pytest.fixture(scope="module")
def service(declaration: Declaration, aws_url: str, resources: JobResources) -> JobService:
    jobs = declaration.jobs
    store = JobStore(
        table=resources.table,
        bucket=resources.bucket,
        dynamodb=client("dynamodb", aws_url),
        s3=client("s3", aws_url),
        ttl_days=jobs.ttl_days,
        result_inline_max_bytes=jobs.result_inline_max_kb * 1024,
        max_receive_count=jobs.max_receive_count,
    )
    return JobService(
        store=store, queue=JobQueue(queue_url=resources.queue_url, sqs=client("sqs", aws_url))
    )


@pytest.fixture(autouse=True)
def fresh_resources(
    declaration: Declaration, aws_url: str, resources: JobResources
) -> Iterator[None]:
    """Each test starts with empty queues, table and bucket: moto is reset after it and
    the resources made again, at the same names and URLs (SQS allows one purge a minute)."""
    yield
    reset_moto(aws_url)
    again = create_job_resources(declaration, lambda service: client(service, aws_url))
    assert again == resources


@pytest.fixture(scope="module")
def callback_queue(resources: JobResources, sqs: Any) -> CallbackQueue:
    return CallbackQueue(queue_url=resources.callbacks_queue_url, sqs=sqs)


def submit(service: JobService, model: str, version: str, inputs: list[Any]) -> str:
    submission = service.submit(
        tenant=TENANT,
        api_version="v2",
        model=model,
        version=version,
        inputs=inputs,
        correlation_id=f"test-{model}-{version}-{len(inputs)}",
    )
    return submission.job.job_id


def receive(
    sqs: Any, resources: JobResources, count: int, *, callbacks: bool = False
) -> list[dict[str, Any]]:
    """`count` messages from the jobs queue (or the callbacks queue), as the records of
    Lambda's SQS event."""
    queue_url, queue_arn = (
        (resources.callbacks_queue_url, resources.callbacks_queue_arn)
        if callbacks
        else (resources.queue_url, resources.queue_arn)
    )
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while len(messages) < count:
        assert time.monotonic() < deadline, f"{len(messages)} of {count} messages arrived"
        answer = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=min(10, count - len(messages)),
            WaitTimeSeconds=1,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages.extend(answer.get("Messages", []))
    return [sqs_record(message, queue_arn, REGION) for message in messages]


def job_id_of(record: dict[str, Any]) -> str:
    job_id: str = orjson.loads(record["body"])["job_id"]
    return job_id


@dataclass
class Receiver:
    """A tenant's callback endpoint on 127.0.0.1: records each POST, answers the next of
    `statuses` (204 once they run out)."""

    url: str = ""
    statuses: list[int] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            state.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(state.statuses.pop(0) if state.statuses else 204)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/jobs"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
