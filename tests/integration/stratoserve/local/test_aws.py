"""The local stack's AWS (moto in a thread): a restart refuses connections while it is
down, drops the ones that were open, and serves the same state on the same port after."""

from __future__ import annotations

import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import BotoCoreError, EndpointConnectionError

from tests.integration.stratoserve.moto import local_aws, one_try_client

if TYPE_CHECKING:
    from collections.abc import Iterator

    from stratoserve.local.aws import LocalAws


@pytest.fixture
def aws() -> Iterator[LocalAws]:
    with local_aws() as running:
        yield running


def _restart_in_background(
    aws: LocalAws, down_s: float
) -> tuple[threading.Thread, threading.Event]:
    down = threading.Event()
    restarting = threading.Thread(target=aws.restart, args=(down_s,), kwargs={"on_down": down.set})
    restarting.start()
    assert down.wait(10), "never went down"
    return restarting, down


def test_a_restart_refuses_calls_then_serves_the_same_state_on_the_same_port(
    aws: LocalAws,
) -> None:
    url = aws.endpoint_url
    sqs = one_try_client("sqs", url)
    queue = sqs.create_queue(QueueName=f"restart-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    sqs.send_message(QueueUrl=queue, MessageBody="kept")

    restarting, _ = _restart_in_background(aws, down_s=1.0)
    with pytest.raises(EndpointConnectionError):
        sqs.get_queue_url(QueueName=queue.rsplit("/", 1)[1])
    up_while_down = aws.up
    restarting.join(timeout=20)

    assert up_while_down is False
    assert (aws.up, aws.endpoint_url, aws.restarts) == (True, url, 1)
    (message,) = sqs.receive_message(QueueUrl=queue)["Messages"]
    assert message["Body"] == "kept"


def test_a_restart_drops_the_requests_in_flight(aws: LocalAws) -> None:
    """A long poll under way when the server goes down loses its answer, as in a real
    restart: it is not answered later by a server that is down."""
    sqs = one_try_client("sqs", aws.endpoint_url)
    queue = sqs.create_queue(QueueName=f"restart-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    outcome: list[Any] = []

    def long_poll() -> None:
        try:
            outcome.append(sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=10))
        except Exception as error:
            outcome.append(error)

    polling = threading.Thread(target=long_poll)
    polling.start()
    deadline = time.monotonic() + 10
    while not aws._server.connections:  # the request is in moto's hands
        assert time.monotonic() < deadline, "the long poll never reached moto"
        time.sleep(0.05)
    started = time.monotonic()
    restarting, _ = _restart_in_background(aws, down_s=1.0)
    polling.join(timeout=20)
    restarting.join(timeout=20)

    (error,) = outcome
    assert isinstance(error, ConnectionError | BotoCoreError), error
    assert time.monotonic() - started < 8, "answered after the long poll, by a server that is down"


def test_a_stop_during_a_restart_keeps_it_down(aws: LocalAws) -> None:
    restarting, _ = _restart_in_background(aws, down_s=30)
    started = time.monotonic()

    aws.stop()
    restarting.join(timeout=10)

    assert not restarting.is_alive() and time.monotonic() - started < 10
    assert aws.up is False and aws.restarts == 0
