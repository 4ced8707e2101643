"""The gateway's events have the shape of the SAM-generated REST proxy sample, and proxy
results become HTTP responses the way API Gateway makes them."""

from __future__ import annotations

import base64

import pytest

from stratoserve.local.events import BadProxyResult, Caller, http_response, rest_proxy_event
from tests.conftest import sample_event


def _event(body: bytes = b'{"inputs": [1]}') -> dict:
    return rest_proxy_event(
        method="POST",
        path="/v1/predict/digits",
        query=[("a", "1"), ("a", "2"), ("b", "")],
        headers=[
            ("host", "127.0.0.1:8000"),
            ("x-api-key", "k" * 20),
            ("accept", "a"),
            ("accept", "b"),
        ],
        body=body,
        resource="/v1/predict/digits",
        path_parameters=None,
        caller=Caller(source_ip="127.0.0.1", api_key="k" * 20, api_key_id="abc123defg"),
        stage="local",
        request_id="req-1",
    )


def test_event_has_every_field_of_the_sam_sample() -> None:
    sample = sample_event("apigw-rest-proxy.json")
    event = _event()

    assert set(sample) <= set(event)
    assert set(sample["requestContext"]) <= set(event["requestContext"])
    assert set(sample["requestContext"]["identity"]) <= set(event["requestContext"]["identity"])


def test_event_carries_identity_headers_query_and_body() -> None:
    event = _event()

    identity = event["requestContext"]["identity"]
    assert identity["apiKey"] == "k" * 20
    assert identity["apiKeyId"] == "abc123defg"
    assert identity["sourceIp"] == "127.0.0.1"
    assert event["requestContext"]["requestId"] == "req-1"
    assert event["requestContext"]["path"] == "/v1/predict/digits"
    assert event["requestContext"]["stage"] == "local"
    assert event["headers"]["accept"] == "b"
    assert event["multiValueHeaders"]["accept"] == ["a", "b"]
    assert event["queryStringParameters"] == {"a": "2", "b": ""}
    assert event["multiValueQueryStringParameters"]["a"] == ["1", "2"]
    assert event["body"] == '{"inputs": [1]}'
    assert event["isBase64Encoded"] is False


def test_binary_bodies_travel_base64_and_empty_ones_as_null() -> None:
    binary = _event(b"\xff\x00\x01")
    assert binary["isBase64Encoded"] is True
    assert base64.b64decode(binary["body"]) == b"\xff\x00\x01"

    empty = _event(b"")
    assert empty["body"] is None


def test_proxy_result_becomes_a_response() -> None:
    response = http_response(
        {
            "statusCode": 201,
            "headers": {"content-type": "application/json", "content-length": "999"},
            "multiValueHeaders": {"set-cookie": ["a=1", "b=2"]},
            "body": base64.b64encode(b"{}").decode(),
            "isBase64Encoded": True,
        }
    )

    assert response.status == 201
    assert response.body == b"{}"
    assert ("set-cookie", "a=1") in response.headers
    assert ("set-cookie", "b=2") in response.headers
    assert all(name != "content-length" for name, _ in response.headers)


@pytest.mark.parametrize(
    "result", [None, {"body": "x"}, {"statusCode": "200"}, {"statusCode": 200, "body": 5}]
)
def test_a_malformed_proxy_result_is_refused(result: object) -> None:
    with pytest.raises(BadProxyResult):
        http_response(result)
