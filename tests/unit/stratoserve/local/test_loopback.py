"""The loopback checks of the local stack's own services: what boto3 signs with the
stack's token verifies, anything else does not; pages, rebound names and text are refused."""

from __future__ import annotations

import stat
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.config import Config

from stratoserve.local.loopback import (
    check_content_type,
    check_origin,
    check_token,
    sigv4_matches,
)
from stratoserve.local.stack import secure_state_dir

if TYPE_CHECKING:
    from pathlib import Path

TOKEN = "the-stacks-token"
ENDPOINT = "http://127.0.0.1:4566"


class _Sent(Exception):
    pass


def _signed(service: str, call: Any, secret: str = TOKEN) -> dict[str, Any]:
    """What boto3 would send for `call`, signed with `secret` (not sent)."""
    client = boto3.client(
        service,
        endpoint_url=ENDPOINT,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key=secret,
        config=Config(s3={"addressing_style": "path"}),
    )
    captured: dict[str, Any] = {}

    def grab(request: Any, **_: Any) -> None:
        url = urlsplit(request.url)
        headers = {name.lower(): value for name, value in request.headers.items()}
        headers = {k: v.decode() if isinstance(v, bytes) else v for k, v in headers.items()}
        body = request.body or b""
        if hasattr(body, "read"):  # S3's bodies are streams
            body = body.read()
        captured.update(
            method=request.method,
            raw_path=url.path,
            raw_query=url.query,
            headers={**headers, "host": url.netloc},
            body=body.encode() if isinstance(body, str) else body,
        )
        raise _Sent

    client.meta.events.register("before-send", grab)
    with pytest.raises(_Sent):
        call(client)
    return captured


CALLS = {
    "lambda": lambda c: c.invoke(
        FunctionName="arn:aws:lambda:us-east-1:123456789012:function:api", Payload=b'{"a": 1}'
    ),
    "apigateway": lambda c: c.get_api_keys(includeValues=True, nameQuery="a b/c"),
    "sqs": lambda c: c.list_queues(),
    "dynamodb": lambda c: c.list_tables(),
    "s3": lambda c: c.put_object(Bucket="bucket", Key="a key/with spaces", Body=b"abc"),
}


@pytest.mark.parametrize("service", sorted(CALLS))
def test_what_boto3_signs_with_the_token_verifies_and_nothing_else(service: str) -> None:
    good = _signed(service, CALLS[service])
    wrong_secret = _signed(service, CALLS[service], secret="local")
    tampered = {**good, "body": good["body"] + b" "}

    assert sigv4_matches(**good, secret=TOKEN)
    assert not sigv4_matches(**wrong_secret, secret=TOKEN)
    assert not sigv4_matches(**good, secret=TOKEN, now=time.time() + 3600)  # replayed later
    if service != "s3":  # S3 signs the body's hash as a header, not the body itself
        assert not sigv4_matches(**tampered, secret=TOKEN)


def test_a_presigned_url_verifies_until_it_expires() -> None:
    s3 = boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key=TOKEN,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    url = urlsplit(
        s3.generate_presigned_url(
            "get_object", Params={"Bucket": "b", "Key": "results/a b.json"}, ExpiresIn=60
        )
    )
    request = {
        "method": "GET",
        "raw_path": url.path,
        "raw_query": url.query,
        "headers": {"host": url.netloc},
        "body": b"",
    }

    assert sigv4_matches(**request, secret=TOKEN)
    assert not sigv4_matches(**request, secret=TOKEN, now=time.time() + 120)
    assert not sigv4_matches(**request, secret="local")


def test_a_bearer_token_passes_and_a_missing_or_wrong_one_does_not() -> None:
    def check(headers: dict[str, str]) -> int | None:
        refusal = check_token(
            method="GET", raw_path="/", raw_query="", headers=headers, body=b"", token=TOKEN
        )
        return None if refusal is None else refusal.status

    assert check({"authorization": f"Bearer {TOKEN}"}) is None
    assert check({"authorization": "Bearer not-it"}) == 403
    assert check({}) == 403


@pytest.mark.parametrize(
    ("headers", "refused"),
    [
        ({"host": "127.0.0.1:8001"}, False),
        ({"host": "localhost:8001"}, False),
        ({"host": "127.0.0.1:9999"}, True),
        ({"host": "rebound.example.com:8001"}, True),
        ({}, True),
        ({"host": "127.0.0.1:8001", "origin": "https://example.com"}, True),
        ({"host": "127.0.0.1:8001", "origin": "null"}, True),
    ],
)
def test_only_loopback_hosts_and_no_web_page(headers: dict[str, str], refused: bool) -> None:
    assert (check_origin(headers, 8001) is not None) is refused


@pytest.mark.parametrize(
    ("method", "headers", "allow_missing", "status"),
    [
        ("POST", {"content-type": "application/json"}, False, None),
        ("POST", {"content-type": "application/json; charset=utf-8"}, False, None),
        ("POST", {"content-type": "text/plain"}, True, 415),
        ("POST", {"content-type": "application/x-www-form-urlencoded"}, False, 415),
        ("POST", {"content-length": "7"}, False, 415),
        ("POST", {"content-length": "7"}, True, None),  # boto3's Invoke
        ("GET", {"content-type": "text/plain"}, False, None),
    ],
)
def test_bodies_are_json(
    method: str, headers: dict[str, str], allow_missing: bool, status: int | None
) -> None:
    refusal = check_content_type(method, headers, allow_missing=allow_missing)
    assert (refusal.status if refusal else None) == status


def test_an_existing_state_folder_is_tightened(tmp_path: Path) -> None:
    state = tmp_path / ".stratoserve"
    state.mkdir(mode=0o755)
    state.chmod(0o755)

    secure_state_dir(state)

    assert stat.S_IMODE(state.stat().st_mode) == 0o700
