"""The local SQS event source mapping against moto's SQS and real local environments:
partial batch responses, visibility timeouts, redrive to the dead-letter queue, batch size
and batching window, as Lambda's pollers do them."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import TYPE_CHECKING, Any

import pytest

from stratoserve.local.aws import REGION, LocalAws, client
from stratoserve.local.environments import FunctionConfig, FunctionPool, Invocation
from stratoserve.local.poller import EventSourcePoller
from tests.conftest import ROOT, sample_event
from tests.integration.stratoserve.moto import local_aws

if TYPE_CHECKING:
    from collections.abc import Iterator

HANDLERS = "tests.integration.stratoserve.local.handlers"
VISIBILITY_TIMEOUT_S = 1
MAX_RECEIVE_COUNT = 2
_names = itertools.count()


class RecordingPool(FunctionPool):
    """The function's pool, keeping each invocation's records and answer."""

    def __init__(self, handler: str) -> None:
        config = FunctionConfig(
            name=f"test-{handler}",
            handler=f"{HANDLERS}.{handler}",
            memory_mb=256,
            timeout_s=5,
            max_environments=2,
        )
        super().__init__(config, cwd=ROOT)
        self.batches: list[list[dict[str, Any]]] = []

    async def invoke(self, event: Any) -> Invocation:
        self.batches.append(event["Records"])
        return await super().invoke(event)

    def bodies(self, batch: int) -> list[str]:
        return sorted(record["body"] for record in self.batches[batch])


class Queues:
    """A small jobs queue made by hand: 1 s visibility, to the DLQ after 2 deliveries."""

    def __init__(self, sqs: Any) -> None:
        self.sqs = sqs
        name = f"poller-test-{next(_names)}"
        self.dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
        dlq_arn = self._attribute(self.dlq_url, "QueueArn")
        redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVE_COUNT}
        self.url = sqs.create_queue(
            QueueName=name,
            Attributes={
                "VisibilityTimeout": str(VISIBILITY_TIMEOUT_S),
                "RedrivePolicy": json.dumps(redrive),
            },
        )["QueueUrl"]
        self.arn = self._attribute(self.url, "QueueArn")

    def send(self, *bodies: str) -> None:
        for start in range(0, len(bodies), 10):
            chunk = bodies[start : start + 10]
            self.sqs.send_message_batch(
                QueueUrl=self.url,
                Entries=[
                    {"Id": str(index), "MessageBody": body} for index, body in enumerate(chunk)
                ],
            )

    def counts(self, url: str | None = None) -> tuple[int, int]:
        """(visible, in flight) messages of the queue (the jobs queue by default)."""
        answer = self.sqs.get_queue_attributes(
            QueueUrl=url or self.url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return (
            int(answer["ApproximateNumberOfMessages"]),
            int(answer["ApproximateNumberOfMessagesNotVisible"]),
        )

    def dead_letters(self) -> list[str]:
        answer = self.sqs.receive_message(QueueUrl=self.dlq_url, MaxNumberOfMessages=10)
        return sorted(message["Body"] for message in answer.get("Messages", []))

    def poller(
        self, pool: FunctionPool, *, batch_size: int = 10, batching_window_s: float = 0
    ) -> EventSourcePoller:
        return EventSourcePoller(
            sqs=self.sqs,
            queue_url=self.url,
            queue_arn=self.arn,
            pool=pool,
            batch_size=batch_size,
            batching_window_s=batching_window_s,
            region=REGION,
        )

    def _attribute(self, url: str, name: str) -> str:
        value: str = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[name])[
            "Attributes"
        ][name]
        return value


@pytest.fixture(scope="module")
def aws() -> Iterator[LocalAws]:
    with local_aws() as running:
        yield running


@pytest.fixture(scope="module")
def sqs(aws: LocalAws) -> Any:
    return client("sqs", aws.endpoint_url)


@pytest.fixture
def queues(sqs: Any) -> Queues:
    return Queues(sqs)


def _run(pool: FunctionPool, scenario: Any) -> Any:
    async def run() -> Any:
        try:
            return await scenario
        finally:
            await pool.close()

    return asyncio.run(run())


async def _after_visibility_timeout() -> None:
    await asyncio.sleep(VISIBILITY_TIMEOUT_S + 0.2)


def test_successes_are_deleted_failures_return_and_end_in_the_dead_letter_queue(
    queues: Queues,
) -> None:
    pool = RecordingPool("fail_marked")
    poller = queues.poller(pool)
    queues.send("ok-1", "fail-1", "ok-2")

    async def scenario() -> list[Any]:
        seen = [await poller.poll_once(), queues.counts()]
        await _after_visibility_timeout()
        seen += [queues.counts(), await poller.poll_once()]
        await _after_visibility_timeout()
        # Its second delivery failed too: SQS moves it to the DLQ instead of a third.
        seen += [await poller.poll_once(), queues.counts()]
        return seen

    first, after_first, back, second, third, at_end = _run(pool, scenario())

    assert first == 3
    assert pool.bodies(0) == ["fail-1", "ok-1", "ok-2"]
    (sample,) = sample_event("sqs-receive-message.json")["Records"]
    for record in pool.batches[0]:
        assert set(record) == set(sample)
        assert set(sample["attributes"]) <= set(record["attributes"])
        assert record["attributes"]["ApproximateReceiveCount"] == "1"
        assert record["eventSourceARN"] == queues.arn
    assert after_first == (0, 1), "the successes were deleted; the failure is in flight"
    assert back == (1, 0), "visible again once its visibility timed out"
    assert second == 1
    (redelivered,) = pool.batches[1]
    assert redelivered["body"] == "fail-1"
    assert redelivered["attributes"]["ApproximateReceiveCount"] == "2"
    assert third == 0
    assert at_end == (0, 0)
    assert queues.dead_letters() == ["fail-1"]
    assert poller.invocations == 2


@pytest.mark.parametrize(
    "handler", ["raise_error", "fail_a_stranger"], ids=["raises", "names-a-stranger"]
)
def test_a_failed_invocation_or_unreadable_answer_leaves_the_whole_batch(
    queues: Queues, handler: str
) -> None:
    pool = RecordingPool(handler)
    poller = queues.poller(pool)
    queues.send("ok-1", "ok-2")

    async def scenario() -> list[Any]:
        seen = [await poller.poll_once(), queues.counts()]
        await _after_visibility_timeout()
        return [*seen, queues.counts()]

    handled, in_flight, back = _run(pool, scenario())

    assert handled == 2
    assert in_flight == (0, 2), "nothing was deleted"
    assert back == (2, 0), "both come back when their visibility times out"


def test_batches_hold_at_most_batch_size_records(queues: Queues) -> None:
    pool = RecordingPool("fail_marked")
    poller = queues.poller(pool, batch_size=10)
    queues.send(*(f"ok-{index}" for index in range(25)))

    async def scenario() -> list[int]:
        return [await poller.poll_once() for _ in range(3)]

    sizes = _run(pool, scenario())

    assert sizes == [10, 10, 5]
    assert [len(batch) for batch in pool.batches] == [10, 10, 5]
    assert sorted(body for batch in range(3) for body in pool.bodies(batch)) == sorted(
        f"ok-{index}" for index in range(25)
    )
    assert queues.counts() == (0, 0)


def test_a_batch_over_ten_records_is_gathered_from_several_receives(queues: Queues) -> None:
    pool = RecordingPool("fail_marked")
    poller = queues.poller(pool, batch_size=25, batching_window_s=1)
    queues.send(*(f"ok-{index}" for index in range(25)))

    assert _run(pool, poller.poll_once()) == 25
    assert [len(batch) for batch in pool.batches] == [25]
    assert queues.counts() == (0, 0)


def test_the_batching_window_gathers_what_arrives_within_it(queues: Queues) -> None:
    pool = RecordingPool("fail_marked")
    poller = queues.poller(pool, batch_size=10, batching_window_s=1)
    queues.send("ok-early-1", "ok-early-2")

    async def scenario() -> tuple[int, float]:
        started = time.monotonic()
        polling = asyncio.create_task(poller.poll_once())
        await asyncio.sleep(0.3)
        await asyncio.to_thread(queues.send, "ok-late-1", "ok-late-2")
        handled = await polling
        return handled, time.monotonic() - started

    handled, elapsed = _run(pool, scenario())

    assert handled == 4
    assert pool.bodies(0) == ["ok-early-1", "ok-early-2", "ok-late-1", "ok-late-2"]
    # Long polls wait whole seconds, so the window may end up to a second late.
    assert 1.0 <= elapsed < 3.5


def test_without_a_window_a_batch_goes_as_soon_as_it_is_received(queues: Queues) -> None:
    pool = RecordingPool("fail_marked")
    poller = queues.poller(pool, batch_size=10, batching_window_s=0)
    queues.send("ok-1", "ok-2", "ok-3")

    async def scenario() -> tuple[int, float]:
        await pool.prestart(1)  # time the gathering, not the cold start
        started = time.monotonic()
        handled = await poller.poll_once()
        return handled, time.monotonic() - started

    handled, elapsed = _run(pool, scenario())

    assert handled == 3
    assert elapsed < 1.0


def test_running_pollers_drain_the_queue_and_stop(queues: Queues) -> None:
    pool = RecordingPool("fail_marked")
    poller = EventSourcePoller(
        sqs=queues.sqs,
        queue_url=queues.url,
        queue_arn=queues.arn,
        pool=pool,
        batch_size=5,
        batching_window_s=0,
        region=REGION,
        pollers=2,
    )
    queues.send(*(f"ok-{index}" for index in range(12)))

    async def scenario() -> tuple[int, int]:
        poller.start()
        try:
            deadline = time.monotonic() + 10
            while queues.counts() != (0, 0) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
        finally:
            await poller.stop()
        return sum(len(batch) for batch in pool.batches), max(map(len, pool.batches))

    records, largest = _run(pool, scenario())

    assert records == 12
    assert largest <= 5
    assert queues.counts() == (0, 0)


def test_pollers_ride_out_a_restart_of_the_local_aws(aws: LocalAws, queues: Queues) -> None:
    """Receives and deletes refused while SQS is down (and long polls cut off): the
    pollers go on once it is back, and every message is handled and deleted."""
    pool = RecordingPool("fail_marked")
    poller = EventSourcePoller(
        sqs=queues.sqs,
        queue_url=queues.url,
        queue_arn=queues.arn,
        pool=pool,
        batch_size=5,
        batching_window_s=0.5,
        region=REGION,
        pollers=2,
    )
    queues.send(*(f"before-{index}" for index in range(10)))

    async def scenario() -> set[str]:
        poller.start()
        try:
            while not pool.batches:
                await asyncio.sleep(0.05)
            await asyncio.to_thread(aws.restart, 1.5)
            await asyncio.to_thread(queues.send, *(f"after-{index}" for index in range(10)))
            deadline = time.monotonic() + 30
            while queues.counts() != (0, 0) and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
        finally:
            await poller.stop()
        return {record["body"] for batch in pool.batches for record in batch}

    handled = _run(pool, scenario())

    assert handled == {f"{when}-{index}" for when in ("before", "after") for index in range(10)}
    assert queues.counts() == (0, 0)
    assert aws.restarts == 1
