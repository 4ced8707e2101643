"""Who may use the local stack's own loopback services: the Lambda Invoke API (and the
fault API on its port), the local GPU executor and moto.

Loopback is not a boundary: every web page open in the developer's browser can send
requests to 127.0.0.1 (and, through DNS rebinding, read the answers), and on a shared
machine so can every other user. So each service checks, before anything else:

- the Host is 127.0.0.1 or localhost with the service's own port (a rebound name is not);
- no `Origin` header (browsers send one with every cross-site write; no caller of the
  stack is a browser);
- a body, where there is one, is JSON (a page can POST text/plain without a preflight);
- the caller holds the stack's token, which `stratoserve dev` draws at start and keeps in
  `.stratoserve/stack.json` (mode 600, in a folder of mode 700): `Authorization: Bearer
  <token>`, or an AWS Signature Version 4 made with the token as the secret access key,
  so boto3, the AWS CLI and the local functions sign as they do on AWS.

The checks are plain functions over a method, a Host, the headers and the body, so the
ASGI servers (Invoke API), the WSGI server (moto) and http.server (GPU executor) share
them.
"""

from __future__ import annotations

import calendar
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

if TYPE_CHECKING:
    from collections.abc import Mapping

ACCESS_KEY_ID = "local"
"""The access key id of the stack's credentials; the secret is the token."""
LOOPBACK_NAMES = ("127.0.0.1", "localhost")
MAX_CLOCK_SKEW_S = 15 * 60
"""AWS refuses a signature dated more than 15 minutes away from its clock."""
_SIGV4 = "AWS4-HMAC-SHA256"
_SIGV4_DATE = "%Y%m%dT%H%M%SZ"


def new_token() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Refusal:
    status: int
    error_type: str
    """AWS's name for it, for the services that answer as AWS does (x-amzn-ErrorType)."""
    message: str


def check_origin(headers: Mapping[str, str], port: int) -> Refusal | None:
    """The Host and Origin checks. `headers`: lower-case names."""
    host = headers.get("host", "")
    if host not in {f"{name}:{port}" for name in LOOPBACK_NAMES}:
        # The Host itself is not echoed: it is whatever the caller made up.
        return Refusal(
            403,
            "AccessDeniedException",
            f"this local service answers Host 127.0.0.1:{port} or localhost:{port} only",
        )
    if "origin" in headers:
        return Refusal(
            403, "AccessDeniedException", "requests from web pages (with an Origin) are refused"
        )
    return None


def check_content_type(
    method: str, headers: Mapping[str, str], *, allow_missing: bool = False
) -> Refusal | None:
    """JSON bodies only; a request without a body needs no type. `allow_missing`: a body
    without a Content-Type passes (boto3's lambda client sends none with Invoke's payload;
    a browser's request would carry an Origin, refused already)."""
    if method in ("GET", "HEAD", "DELETE", "OPTIONS"):
        return None
    content_type = headers.get("content-type")
    if content_type is None:
        if allow_missing or headers.get("content-length", "0") == "0":
            return None
    elif content_type.split(";", 1)[0].strip().lower() == "application/json":
        return None
    return Refusal(
        415,
        "UnsupportedMediaTypeException",
        "the body must be JSON (Content-Type: application/json)",
    )


def bearer_matches(headers: Mapping[str, str], token: str) -> bool:
    scheme, _, presented = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not presented:
        return False
    return hmac.compare_digest(presented.strip().encode(), token.encode())


def sigv4_signed(headers: Mapping[str, str], raw_query: str) -> bool:
    """Whether the request carries a SigV4 signature (header or presigned URL)."""
    return headers.get("authorization", "").startswith(_SIGV4) or "X-Amz-Signature=" in raw_query


def sigv4_matches(
    *,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    body: bytes,
    secret: str,
    now: float | None = None,
) -> bool:
    """Whether the request's SigV4 signature (an Authorization header, or a presigned URL's
    query) was made with `secret`, within its time. botocore's own signer recomputes it from
    the request as it came (its raw path and query, the headers it signed), so what boto3
    signs verifies byte for byte. `headers`: lower-case names."""
    from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth, SigV4QueryAuth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    query = parse_qsl(raw_query, keep_blank_values=True)
    authorization = headers.get("authorization", "")
    presigned = not authorization.startswith(_SIGV4)
    if presigned:
        fields = dict(query)
        query = [(name, value) for name, value in query if name != "X-Amz-Signature"]
        credential = fields.get("X-Amz-Credential", "")
        signed_headers = fields.get("X-Amz-SignedHeaders", "")
        signature = fields.get("X-Amz-Signature", "")
        timestamp = fields.get("X-Amz-Date", "")
        expires = fields.get("X-Amz-Expires", "")
    else:
        fields = dict(
            part.strip().partition("=")[::2] for part in authorization[len(_SIGV4) :].split(",")
        )
        credential = fields.get("Credential", "")
        signed_headers = fields.get("SignedHeaders", "")
        signature = fields.get("Signature", "")
        timestamp = headers.get("x-amz-date", "")
        expires = ""
    scope = credential.split("/")
    if len(scope) != 5 or scope[4] != "aws4_request" or not timestamp.startswith(scope[1]):
        return False
    access_key, _, region, service, _ = scope
    try:
        signed_at = calendar.timegm(time.strptime(timestamp, _SIGV4_DATE))
        valid_s = int(expires) if presigned else MAX_CLOCK_SKEW_S
    except ValueError:
        return False
    now = time.time() if now is None else now
    if not signed_at - MAX_CLOCK_SKEW_S <= now <= signed_at + valid_s:
        return False
    names = signed_headers.split(";")
    if "host" not in names or any(name not in headers for name in names):
        return False
    request = AWSRequest(
        method=method,
        url=f"http://{headers['host']}{raw_path}",
        headers={name: headers[name] for name in names},
        data=body,
        params=query,
    )
    request.context["timestamp"] = timestamp
    signer_class: type[SigV4Auth]
    if service == "s3":  # S3 signs its path as it is (no normalising, no double encoding)
        signer_class = S3SigV4QueryAuth if presigned else S3SigV4Auth
    else:
        signer_class = SigV4QueryAuth if presigned else SigV4Auth
    signer = signer_class(Credentials(access_key, secret), service, region)
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    return hmac.compare_digest(expected.encode(), signature.encode())


def check_token(
    *,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    body: bytes,
    token: str,
) -> Refusal | None:
    """The caller holds the token: as a bearer token, or as the secret of a SigV4 signature."""
    if bearer_matches(headers, token):
        return None
    if sigv4_signed(headers, raw_query):
        if sigv4_matches(
            method=method,
            raw_path=raw_path,
            raw_query=raw_query,
            headers=headers,
            body=body,
            secret=token,
        ):
            return None
        return Refusal(
            403,
            "InvalidSignatureException",
            "the signature does not match the local stack's credentials (access key id "
            f"{ACCESS_KEY_ID!r}, the secret is the token in .stratoserve/stack.json)",
        )
    return Refusal(
        403,
        "UnrecognizedClientException",
        "this local service needs the local stack's token: Authorization: Bearer <token> "
        "(the token is in .stratoserve/stack.json)",
    )
