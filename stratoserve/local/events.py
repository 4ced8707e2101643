"""API Gateway REST proxy events, built from HTTP requests, and proxy results turned back
into HTTP responses — the exact shapes Lambda sees and returns behind API Gateway."""

from __future__ import annotations

import base64
import time
import uuid
from dataclasses import dataclass
from typing import Any

LOCAL_ACCOUNT = "123456789012"
LOCAL_API_ID = "local"


@dataclass(frozen=True)
class Caller:
    source_ip: str
    api_key: str | None = None
    api_key_id: str | None = None


def rest_proxy_event(
    *,
    method: str,
    path: str,
    query: list[tuple[str, str]],
    headers: list[tuple[str, str]],
    body: bytes,
    resource: str,
    path_parameters: dict[str, str] | None,
    caller: Caller,
    stage: str,
    request_id: str,
) -> dict[str, Any]:
    single_headers: dict[str, str] = {}
    multi_headers: dict[str, list[str]] = {}
    for name, value in headers:
        single_headers[name] = value
        multi_headers.setdefault(name, []).append(value)
    single_query: dict[str, str] = {}
    multi_query: dict[str, list[str]] = {}
    for name, value in query:
        single_query[name] = value
        multi_query.setdefault(name, []).append(value)
    text_body, is_base64 = _body(body)
    now = time.time()
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": single_headers or None,
        "multiValueHeaders": multi_headers or None,
        "queryStringParameters": single_query or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": path_parameters,
        "stageVariables": None,
        "requestContext": {
            "resourceId": uuid.uuid4().hex[:6],
            "resourcePath": resource,
            "httpMethod": method,
            "extendedRequestId": uuid.uuid4().hex[:16],
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            # The path as the client sent it, as behind a custom domain: the local URL
            # carries no stage prefix (execute-api URLs put "/{stage}" here).
            "path": path,
            "accountId": LOCAL_ACCOUNT,
            "protocol": "HTTP/1.1",
            "stage": stage,
            "domainPrefix": "localhost",
            "requestTimeEpoch": int(now * 1000),
            "requestId": request_id,
            "identity": {
                "cognitoIdentityPoolId": None,
                "accountId": None,
                "cognitoIdentityId": None,
                "caller": None,
                "apiKey": caller.api_key,
                "apiKeyId": caller.api_key_id,
                "sourceIp": caller.source_ip,
                "principalOrgId": None,
                "accessKey": None,
                "cognitoAuthenticationType": None,
                "cognitoAuthenticationProvider": None,
                "userArn": None,
                "userAgent": single_headers.get("user-agent"),
                "user": None,
            },
            "domainName": single_headers.get("host", "localhost"),
            "apiId": LOCAL_API_ID,
        },
        "body": text_body,
        "isBase64Encoded": is_base64,
    }


def _body(body: bytes) -> tuple[str | None, bool]:
    if not body:
        return None, False
    try:
        return body.decode(), False
    except UnicodeDecodeError:
        return base64.b64encode(body).decode(), True


class BadProxyResult(ValueError):
    """The function returned something API Gateway cannot turn into a response (502)."""


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def http_response(result: Any) -> HttpResponse:
    if not isinstance(result, dict) or not isinstance(result.get("statusCode"), int):
        raise BadProxyResult("the result has no integer statusCode")
    headers: list[tuple[str, str]] = []
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers.extend((name, str(value)) for value in values)
    seen = {name.lower() for name, _ in headers}
    headers.extend(
        (name, str(value))
        for name, value in (result.get("headers") or {}).items()
        if name.lower() not in seen
    )
    body = result.get("body") or ""
    if not isinstance(body, str):
        raise BadProxyResult("the result's body is not a string")
    raw = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode()
    # The integration's content-length is not trusted: API Gateway recomputes it.
    headers = [(name, value) for name, value in headers if name.lower() != "content-length"]
    return HttpResponse(result["statusCode"], headers, raw)
