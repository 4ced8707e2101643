"""The callbacks queue (SQS): a finished job's callback waits here, off the worker's
critical path, until functions/worker/callbacks.py delivers it. The queue's own retries
(one attempt a delivery, with backoff) and dead-letter queue make the delivery at least
once; the job record says where it stands (see CallbackState)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

import orjson

from functions.runtime.job_queue import CORRELATION_ATTRIBUTE
from functions.runtime.jobs import MalformedMessage
from stratoserve.declaration.schema import CALLBACKS_MAX_CONCURRENCY

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


BATCH_SIZE = 10
"""Callback records per worker invocation (the event source mapping's BatchSize): they
are sent side by side, each within its own deadline."""
MAX_CONCURRENCY = CALLBACKS_MAX_CONCURRENCY
"""Worker invocations the callbacks' event source runs at once (the least SQS allows):
receivers that answer slowly hold at most this many worker environments."""


class CallbackState(StrEnum):
    """A job's callback: pending (the job has a callback_url and no state yet: derived,
    never written) -> enqueued -> delivered | failed."""

    PENDING = "pending"
    ENQUEUED = "enqueued"
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True)
class CallbackMessage:
    """Which job's callback is due. The URL, the body and the secret version are read from
    the job record when the callback is sent, never taken from the message."""

    tenant: str
    job_id: str
    correlation_id: str

    def encode(self) -> bytes:
        return orjson.dumps(
            {"tenant": self.tenant, "job_id": self.job_id, "correlation_id": self.correlation_id}
        )

    @classmethod
    def decode(cls, body: str) -> CallbackMessage:
        try:
            raw = orjson.loads(body)
        except orjson.JSONDecodeError as error:
            raise MalformedMessage(f"the message body is not JSON: {error}") from None
        if not isinstance(raw, dict) or not all(
            isinstance(raw.get(name), str) for name in ("tenant", "job_id")
        ):
            raise MalformedMessage("the message is not a callback (tenant and job_id)")
        return cls(
            tenant=raw["tenant"],
            job_id=raw["job_id"],
            correlation_id=str(raw.get("correlation_id") or raw["job_id"]),
        )


class CallbackQueue:
    def __init__(self, *, queue_url: str, sqs: SQSClient) -> None:
        self.queue_url = queue_url
        self._sqs = sqs

    def send(self, message: CallbackMessage) -> str:
        answer = self._sqs.send_message(
            QueueUrl=self.queue_url,
            MessageBody=message.encode().decode(),
            MessageAttributes={
                CORRELATION_ATTRIBUTE: {"DataType": "String", "StringValue": message.correlation_id}
            },
        )
        return answer["MessageId"]

    def retry_later(self, receipt_handle: str, delay_s: int) -> None:
        """Bring a failed attempt back after `delay_s` (the backoff between attempts)."""
        self._sqs.change_message_visibility(
            QueueUrl=self.queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=delay_s
        )

    def holds(self, event_source_arn: str) -> bool:
        """Whether an SQS record came from this queue (a queue's ARN and URL both end
        with its name, unique in an account and region)."""
        return event_source_arn.rsplit(":", 1)[-1] == self.queue_url.rstrip("/").rsplit("/", 1)[-1]
