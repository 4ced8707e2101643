"""The jobs queue (SQS): what the API sends, and the worker's control over a delivery."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

    from functions.runtime.jobs import JobMessage

CORRELATION_ATTRIBUTE = "correlation_id"


class JobQueue:
    def __init__(self, *, queue_url: str, sqs: SQSClient) -> None:
        self.queue_url = queue_url
        self._sqs = sqs

    def send(self, message: JobMessage, *, delay_s: int = 0) -> str:
        """Queue the message; `delay_s` (at most 900, SQS's limit) keeps it hidden that
        long first (how the worker polls a running GPU call)."""
        answer = self._sqs.send_message(
            QueueUrl=self.queue_url,
            MessageBody=message.encode().decode(),
            DelaySeconds=min(max(delay_s, 0), 900),
            # Also outside the body, where SQS tooling (and the DLQ's console) shows it.
            MessageAttributes={
                CORRELATION_ATTRIBUTE: {"DataType": "String", "StringValue": message.correlation_id}
            },
        )
        return answer["MessageId"]

    def retry_later(self, receipt_handle: str, delay_s: int) -> None:
        """Bring a failed delivery back after `delay_s` rather than after the whole
        visibility timeout (a backoff; SQS still counts the delivery)."""
        self._sqs.change_message_visibility(
            QueueUrl=self.queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=delay_s
        )
