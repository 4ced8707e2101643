"""The local event source mapping reads partial batch responses as Lambda does, and builds
SQS records of the shape Lambda sends (the SAM sample's)."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from stratoserve.local.poller import failed_ids, sqs_record
from tests.conftest import sample_event

BATCH = ["id-1", "id-2", "id-3"]
QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:stratoserve-jobs"


def _message(**attributes: dict[str, Any]) -> dict[str, Any]:
    """A message as boto3's ReceiveMessage returns it (all attributes requested)."""
    return {
        "MessageId": "19dd0b57-b21e-4ac1-bd88-01bbb068cb78",
        "ReceiptHandle": "MessageReceiptHandle",
        "MD5OfBody": "7b270e59b47ff90a553787216d55d91d",
        "Body": "Hello from SQS!",
        "Attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "1523232000000",
            "SenderId": "123456789012",
            "ApproximateFirstReceiveTimestamp": "1523232000001",
        },
        **({"MessageAttributes": attributes} if attributes else {}),
    }


@pytest.mark.parametrize(
    "result",
    [None, {}, {"batchItemFailures": []}, {"statusCode": 200}],
    ids=["no-result", "empty-object", "empty-list", "no-failures-key"],
)
def test_an_answer_without_failures_fails_no_record(result: Any) -> None:
    assert failed_ids(result, BATCH) == set()


def test_the_records_named_fail_and_only_those() -> None:
    result = {"batchItemFailures": [{"itemIdentifier": "id-1"}, {"itemIdentifier": "id-3"}]}

    assert failed_ids(result, BATCH) == {"id-1", "id-3"}


@pytest.mark.parametrize(
    "result",
    [
        {"batchItemFailures": [{"itemIdentifier": "id-1"}, {"itemIdentifier": "not-in-batch"}]},
        {"batchItemFailures": [{"itemIdentifier": ""}]},
        {"batchItemFailures": [{"itemIdentifier": None}]},
        {"batchItemFailures": [{"itemIdentifier": 1}]},
        {"batchItemFailures": [{"id": "id-1"}]},
        {"batchItemFailures": ["id-1"]},
        {"batchItemFailures": "id-1"},
        {"batchItemFailures": {"itemIdentifier": "id-1"}},
        "id-1",
        ["id-1"],
    ],
    ids=[
        "unknown-id",
        "empty-id",
        "null-id",
        "number-id",
        "no-identifier",
        "bare-string-item",
        "string-list",
        "object-list",
        "string-answer",
        "list-answer",
    ],
)
def test_an_answer_lambda_cannot_read_fails_the_whole_batch(result: Any) -> None:
    assert failed_ids(result, BATCH) == set(BATCH)


def test_a_record_has_exactly_the_keys_of_the_sam_sample() -> None:
    (sample,) = sample_event("sqs-receive-message.json")["Records"]

    record = sqs_record(_message(), QUEUE_ARN, "us-east-1")

    assert set(record) == set(sample)
    for key in ("messageId", "receiptHandle", "body", "md5OfBody", "attributes", "eventSource"):
        assert record[key] == sample[key], key
    assert record["messageAttributes"] == {}
    assert record["eventSourceARN"] == QUEUE_ARN
    assert record["awsRegion"] == "us-east-1"


def test_message_attributes_read_as_lambdas_through_powertools() -> None:
    message = _message(
        correlation_id={"StringValue": "corr-1", "DataType": "String"},
        priority={"StringValue": "3", "DataType": "Number"},
    )

    record = SQSRecord(sqs_record(message, QUEUE_ARN, "us-east-1"))

    correlation = record.message_attributes["correlation_id"]
    assert correlation is not None
    assert (correlation.string_value, correlation.data_type) == ("corr-1", "String")
    priority = record.message_attributes["priority"]
    assert priority is not None
    assert (priority.string_value, priority.data_type) == ("3", "Number")
    assert record.queue_url == "https://sqs.us-east-1.amazonaws.com/123456789012/stratoserve-jobs"


def test_a_record_with_attributes_is_exactly_what_lambda_sends() -> None:
    message = _message(correlation_id={"StringValue": "corr-1", "DataType": "String"})
    message["MD5OfMessageAttributes"] = "18e31cf8c7e82c76901a7d29b0bd589d"

    record = sqs_record(message, QUEUE_ARN, "us-east-1")

    assert record["messageAttributes"] == {
        "correlation_id": {
            "stringValue": "corr-1",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "String",
        }
    }
    assert record["md5OfMessageAttributes"] == "18e31cf8c7e82c76901a7d29b0bd589d"


def test_a_binary_attribute_arrives_base64_encoded_as_lambda_sends_it() -> None:
    message = _message(checksum={"BinaryValue": b"\x00\x01binary", "DataType": "Binary"})

    record = sqs_record(message, QUEUE_ARN, "us-east-1")

    assert (
        record["messageAttributes"]["checksum"]["binaryValue"]
        == base64.b64encode(b"\x00\x01binary").decode()
    )
    orjson.dumps(record)  # what the poller frames for the environment
