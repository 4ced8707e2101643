"""A job's SQS message survives the trip, a malformed one says what is wrong, and job ids
and request hashes carry idempotency."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest

from functions.runtime.jobs import JobMessage, MalformedMessage, new_job_id, request_hash

FIELDS: dict[str, Any] = {"tenant": "acme", "job_id": "j-1", "model": "embed", "version": "2"}


def test_a_message_with_inline_inputs_round_trips() -> None:
    message = JobMessage(**FIELDS, correlation_id="req-1", inputs=["a", "b", {"x": [1, 2.5]}])

    body = message.encode()

    assert JobMessage.decode(body.decode()) == message
    assert "inputs_key" not in orjson.loads(body)


def test_a_message_pointing_at_inputs_in_s3_round_trips_without_inputs() -> None:
    message = JobMessage(**FIELDS, correlation_id="req-1", inputs_key="inputs/acme/j-1.json")

    body = message.encode()

    decoded = JobMessage.decode(body.decode())
    assert decoded == message
    assert decoded.inputs is None
    assert "inputs" not in orjson.loads(body)


def test_a_message_without_a_correlation_id_takes_the_job_id() -> None:
    body = orjson.dumps({**FIELDS, "inputs": ["a"]}).decode()

    assert JobMessage.decode(body).correlation_id == "j-1"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("not json", r"^the message body is not JSON: "),
        ('["a list"]', r"^the message body is not a JSON object$"),
        ('"text"', r"^the message body is not a JSON object$"),
        (
            orjson.dumps({"job_id": "j", "inputs": []}).decode(),
            r"^the message lacks tenant, model, version$",
        ),
        (
            orjson.dumps({**FIELDS, "version": 2, "inputs": []}).decode(),
            r"^the message lacks version$",
        ),
        (orjson.dumps(FIELDS).decode(), r"^the message has neither inputs nor inputs_key$"),
        (
            orjson.dumps({**FIELDS, "inputs": "a", "inputs_key": 3}).decode(),
            r"^the message has neither inputs nor inputs_key$",
        ),
    ],
    ids=["not-json", "list", "string", "missing-fields", "wrong-type", "no-inputs", "bad-inputs"],
)
def test_a_malformed_message_says_what_is_wrong(body: str, message: str) -> None:
    with pytest.raises(MalformedMessage, match=message):
        JobMessage.decode(body)


def test_a_malformed_message_is_a_value_error() -> None:
    assert issubclass(MalformedMessage, ValueError)


def test_an_idempotency_key_names_one_job_per_tenant() -> None:
    first = new_job_id("acme", "order-42")

    assert new_job_id("acme", "order-42") == first
    assert new_job_id("globex", "order-42") != first
    assert new_job_id("acme", "order-43") != first
    assert uuid.UUID(first).version == 5


def test_the_tenant_and_key_cannot_be_confused_by_where_they_split() -> None:
    assert new_job_id("ab", "c") != new_job_id("a", "bc")


def test_without_a_key_each_job_id_is_new() -> None:
    ids = {new_job_id("acme", None) for _ in range(5)}

    assert len(ids) == 5
    assert all(uuid.UUID(job_id).version == 4 for job_id in ids)


def test_the_request_hash_changes_with_every_part_of_the_request() -> None:
    base = request_hash("embed", "2", b'["a"]', None)

    assert request_hash("embed", "2", b'["a"]', None) == base
    others = {
        request_hash("embed", "2", b'["b"]', None),
        request_hash("digits", "2", b'["a"]', None),
        request_hash("embed", "1", b'["a"]', None),
        request_hash("embed", "2", b'["a"]', "https://example.com/hook"),
    }
    assert base not in others
    assert len(others) == 4


def test_the_request_hash_parts_do_not_run_into_each_other() -> None:
    # Length-prefixed parts: moving a character from one part to the next is another request.
    assert request_hash("embed", "21", b"[]", None) != request_hash("embed2", "1", b"[]", None)
