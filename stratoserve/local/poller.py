"""The local SQS event source mapping: what Lambda's pollers do between a queue and the
worker function, against the local stack's SQS (moto).

- Receives up to `batch_size` messages, waiting at most `batching_window_s` after the
  first one (long polling, as Lambda's pollers do).
- Invokes the worker in one of its local execution environments with the SQS event
  Lambda would build, and reads its partial batch response (ReportBatchItemFailures):
  the listed records stay on the queue, the others are deleted. A malformed response or a
  failed invocation (an error, a crash, a timeout) leaves the whole batch on the queue.
- Visibility timeouts, receive counts and the move to the dead-letter queue after
  `maxReceiveCount` deliveries are SQS's own (moto's), as on AWS.
- Runs as many pollers as the worker may have environments (Lambda scales its pollers
  with the queue; a function's concurrency bounds them).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from typing import TYPE_CHECKING, Any

from stratoserve.local.environments import InvocationError
from stratoserve.local.tasks import cancel_all

if TYPE_CHECKING:
    from stratoserve.local.environments import FunctionPool

logger = logging.getLogger("stratoserve.poller")

RECEIVE_MAX = 10
"""SQS hands out at most ten messages per ReceiveMessage."""
LONG_POLL_S = 1
"""Short enough for a prompt shutdown; an empty queue costs one call a second."""
WINDOW_STEP_S = 0.1
"""Within a batching window's last second: how long between receives that found nothing
(a batch closes at most this late)."""


def sqs_record(message: dict[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    """One record of Lambda's SQS event, from a ReceiveMessage answer's message."""
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": dict(message.get("Attributes", {})),
        "messageAttributes": {
            name: _attribute(value) for name, value in message.get("MessageAttributes", {}).items()
        },
        **(
            {"md5OfMessageAttributes": message["MD5OfMessageAttributes"]}
            if "MD5OfMessageAttributes" in message
            else {}
        ),
        "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }


def _attribute(value: dict[str, Any]) -> dict[str, Any]:
    """A message attribute as Lambda writes it: lower camel case, binary in base64."""
    attribute: dict[str, Any] = {}
    if "StringValue" in value:
        attribute["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        attribute["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode()
    return {
        **attribute,
        "stringListValues": [],
        "binaryListValues": [],
        "dataType": value["DataType"],
    }


def failed_ids(result: Any, batch: list[str]) -> set[str]:
    """The records a partial batch response says failed. As Lambda does, an answer that
    cannot be read, or that names a record not in the batch, fails the whole batch."""
    if result is None:
        return set()
    if not isinstance(result, dict):
        return set(batch)
    failures = result.get("batchItemFailures")
    if failures is None:
        return set()
    if not isinstance(failures, list):
        return set(batch)
    failed: set[str] = set()
    for failure in failures:
        identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
        if not isinstance(identifier, str) or identifier not in batch:
            return set(batch)
        failed.add(identifier)
    return failed


class EventSourcePoller:
    def __init__(
        self,
        *,
        sqs: Any,
        queue_url: str,
        queue_arn: str,
        pool: FunctionPool,
        batch_size: int,
        batching_window_s: float,
        region: str,
        pollers: int = 1,
    ) -> None:
        self._sqs = sqs
        self.queue_url = queue_url
        self.queue_arn = queue_arn
        self.pool = pool
        self.batch_size = batch_size
        self.batching_window_s = batching_window_s
        self.region = region
        self.pollers = pollers
        self.invocations = 0
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._poll()) for _ in range(self.pollers)]

    async def stop(self) -> None:
        await cancel_all(self._tasks)
        self._tasks = []

    async def _poll(self) -> None:
        while True:
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                # The local SQS went away or refused a call: wait, then poll again.
                logger.warning("polling the jobs queue failed: %s", error)
                await asyncio.sleep(1)

    async def poll_once(self) -> int:
        """Gather one batch and hand it to the worker; the number of records."""
        messages = await self._gather()
        if not messages:
            return 0
        records = [sqs_record(message, self.queue_arn, self.region) for message in messages]
        batch = [record["messageId"] for record in records]
        self.invocations += 1
        try:
            invocation = await self.pool.invoke({"Records": records})
            failed = failed_ids(invocation.result, batch)
        except InvocationError as error:
            # Lambda leaves the batch on the queue: it returns when visibility times out.
            logger.error(
                "worker invocation failed, %d record(s) back to the queue: %s", len(batch), error
            )
            return len(records)
        done = [message for message in messages if message["MessageId"] not in failed]
        await self._delete(done)
        if failed:
            logger.info("worker reported %d of %d record(s) failed", len(failed), len(batch))
        return len(records)

    async def _gather(self) -> list[dict[str, Any]]:
        # By message id: one whose visibility ran out while the window was still open is
        # received again; the batch holds it once, with its latest receipt.
        messages: dict[str, dict[str, Any]] = {}
        window_ends: float | None = None
        while len(messages) < self.batch_size:
            remaining = None if window_ends is None else window_ends - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            # SQS long-polls in whole seconds: a wait longer than the rest of the window
            # would hold the batch past it (by up to a second), so the window's last second
            # is polled without waiting, in short steps.
            wait = LONG_POLL_S if remaining is None or remaining >= LONG_POLL_S else 0
            answer = await asyncio.to_thread(
                self._sqs.receive_message,
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=min(RECEIVE_MAX, self.batch_size - len(messages)),
                WaitTimeSeconds=wait,
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            received = answer.get("Messages", [])
            messages.update((message["MessageId"], message) for message in received)
            if not messages:
                return []  # nothing yet: the caller polls again
            if window_ends is None:
                window_ends = time.monotonic() + self.batching_window_s
            if not received:
                if self.batching_window_s == 0:
                    break
                if wait == 0:
                    await asyncio.sleep(
                        min(WINDOW_STEP_S, max(0.0, window_ends - time.monotonic()))
                    )
        return list(messages.values())

    async def _delete(self, messages: list[dict[str, Any]]) -> None:
        for start in range(0, len(messages), RECEIVE_MAX):
            chunk = messages[start : start + RECEIVE_MAX]
            answer = await asyncio.to_thread(
                self._sqs.delete_message_batch,
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]}
                    for index, message in enumerate(chunk)
                ],
            )
            for failure in answer.get("Failed", []):
                logger.warning("could not delete a finished message: %s", failure.get("Message"))
