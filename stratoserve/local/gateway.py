"""The local gateway: an ASGI app that does what API Gateway does in front of Lambda.

It checks `x-api-key`, finds the resource, builds the REST proxy event and invokes the
function's handler in one of its local execution environments — the same handler, fed the
same event, as on AWS. Its own refusals are API Gateway's bytes.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import TYPE_CHECKING

from stratoserve.local.environments import InvocationError
from stratoserve.local.events import BadProxyResult, Caller, http_response, rest_proxy_event
from stratoserve.local.routes import MethodNotDeclared

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

    from stratoserve.local.environments import FunctionPool
    from stratoserve.local.keys import KeyStore
    from stratoserve.local.routes import RouteTable

access_log = logging.getLogger("stratoserve.gateway")

# Lambda's synchronous invocation payload limit; API Gateway's own is larger.
MAX_BODY_BYTES = 6 * 1024 * 1024
# API Gateway's integration timeout: a longer-running function still gets a 504 here.
INTEGRATION_TIMEOUT_S = 29

# (status, body, x-amzn-ErrorType) — API Gateway's answers, byte for byte.
FORBIDDEN = (403, b'{"message":"Forbidden"}', "ForbiddenException")
MISSING_TOKEN = (
    403,
    b'{"message":"Missing Authentication Token"}',
    "MissingAuthenticationTokenException",
)
TOO_LARGE = (413, b'{"message":"Request Too Long"}', "RequestTooLongException")
INTERNAL_ERROR = (502, b'{"message":"Internal server error"}', "InternalServerErrorException")
TIMED_OUT = (504, b'{"message":"Endpoint request timed out"}', "IntegrationTimeoutException")


class Gateway:
    def __init__(
        self,
        *,
        routes: RouteTable,
        keys: KeyStore,
        pools: dict[str, FunctionPool],
        stage: str = "local",
        integration_timeout_s: float = INTEGRATION_TIMEOUT_S,
    ) -> None:
        self.routes = routes
        self.keys = keys
        self.pools = pools
        self.stage = stage
        self.integration_timeout_s = integration_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        request_id = str(uuid.uuid4())
        try:
            status, headers, body, function = await self._handle(scope, receive, request_id)
        except ClientGone:
            return
        headers.append(("x-amzn-RequestId", request_id))
        headers.append(("content-length", str(len(body))))
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(name.lower().encode(), value.encode()) for name, value in headers],
            }
        )
        await send({"type": "http.response.body", "body": body})
        access_log.info(
            "%s %s %d %.1f ms%s",
            scope["method"],
            scope["path"],
            status,
            (time.perf_counter() - started) * 1000,
            f" -> {function}" if function else "",
        )

    async def _handle(
        self, scope: Scope, receive: Receive, request_id: str
    ) -> tuple[int, list[tuple[str, str]], bytes, str | None]:
        method, path = scope["method"], scope["path"]
        try:
            match = self.routes.match(method, path)
        except MethodNotDeclared:
            match = None
        if match is None:
            return (*_refusal(MISSING_TOKEN), None)
        headers = [
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]
        ]
        caller = Caller(source_ip=(scope.get("client") or ("127.0.0.1", 0))[0])
        if match.route.api_key_required:
            presented = next(
                (value for name, value in headers if name.lower() == "x-api-key"), None
            )
            key = self.keys.lookup(presented) if presented else None
            if key is None:
                return (*_refusal(FORBIDDEN), None)
            caller = Caller(source_ip=caller.source_ip, api_key=key.value, api_key_id=key.key_id)
        body = await _read_body(receive)
        if body is None:
            return (*_refusal(TOO_LARGE), None)
        query = _query(scope.get("query_string", b""))
        event = rest_proxy_event(
            method=method,
            path=path,
            query=query,
            headers=headers,
            body=body,
            resource=match.route.resource,
            path_parameters=match.path_parameters,
            caller=caller,
            stage=self.stage,
            request_id=request_id,
        )
        function = match.route.function
        try:
            # API Gateway stops waiting after 29 s, whatever the function's own timeout,
            # and that includes any wait for a free environment and its cold start.
            invocation = await asyncio.wait_for(
                self.pools[function].invoke(event), self.integration_timeout_s
            )
            response = http_response(invocation.result)
        except TimeoutError:
            access_log.error("%s: no answer within %g s", function, self.integration_timeout_s)
            return (*_refusal(TIMED_OUT), function)
        except InvocationError as error:
            access_log.error("%s", error)
            return (*_refusal(INTERNAL_ERROR), function)
        except BadProxyResult as error:
            access_log.error("%s: malformed Lambda proxy response: %s", function, error)
            return (*_refusal(INTERNAL_ERROR), function)
        label = (
            f"{function} (cold start, init {invocation.init_ms:.0f} ms)"
            if invocation.cold_start
            else function
        )
        return response.status, list(response.headers), response.body, label


def _refusal(refusal: tuple[int, bytes, str]) -> tuple[int, list[tuple[str, str]], bytes]:
    status, body, error_type = refusal
    return status, [("content-type", "application/json"), ("x-amzn-ErrorType", error_type)], body


class ClientGone(Exception):
    """The client disconnected before its request was complete: nothing to invoke."""


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


def _query(raw: bytes) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    return parse_qsl(raw.decode("latin-1"), keep_blank_values=True)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
