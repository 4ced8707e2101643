"""The local gateway: an ASGI app that does what API Gateway does in front of Lambda.

It finds the resource, checks `x-api-key`, applies the key's usage plan (throttles, then
quota), builds the REST proxy event and invokes the function's handler in one of its local
execution environments — the same handler, fed the same event, as on AWS. Its own
refusals are API Gateway's bytes.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST

from stratoserve.declaration.routes import MethodNotDeclared
from stratoserve.local.environments import InvocationError
from stratoserve.local.events import BadProxyResult, Caller, http_response, rest_proxy_event
from stratoserve.local.header_limit import MAX_HEADER_BYTES, TOO_LARGE_BODY, request_header_bytes
from stratoserve.local.keys import key_id_for
from stratoserve.local.loopback import bearer_matches
from stratoserve.local.metering import Exchange, Meter
from stratoserve.local.throttling import UsageLimiter

if TYPE_CHECKING:
    from collections.abc import Mapping

    from starlette.types import Receive, Scope, Send

    from stratoserve.declaration.routes import RouteTable
    from stratoserve.local.environments import FunctionPool
    from stratoserve.local.keys import ApiKey, KeyStore
    from stratoserve.local.throttling import PlanLimits

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
THROTTLED = (429, b'{"message":"Too Many Requests"}', "TooManyRequestsException")
QUOTA_EXCEEDED = (429, b'{"message":"Limit Exceeded"}', "LimitExceededException")
HEADERS_TOO_LARGE = (431, TOO_LARGE_BODY, "RequestHeaderFieldsTooLargeException")

# Served by the local gateway only: API Gateway has no such route. Anonymous scrapes get
# aggregates; a tenant's key adds its own series, the stack's token everyone's.
METRICS_PATH = "/metrics"


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    route: str = "-"
    function: str | None = None
    tenant: str | None = None
    init_ms: float | None = None
    admitted: bool = False


class Gateway:
    def __init__(
        self,
        *,
        routes: RouteTable,
        keys: KeyStore,
        pools: dict[str, FunctionPool],
        plans: Mapping[str, PlanLimits] | None = None,
        limiter: UsageLimiter | None = None,
        meter: Meter | None = None,
        stage: str = "local",
        integration_timeout_s: float = INTEGRATION_TIMEOUT_S,
        token: str | None = None,
    ) -> None:
        self.routes = routes
        self.keys = keys
        self.pools = pools
        self.plans = plans or {}
        self.limiter = limiter or UsageLimiter()
        self.meter = meter or Meter()
        self.stage = stage
        self.integration_timeout_s = integration_timeout_s
        self.token = token
        """The stack's token: /metrics shows every tenant's series to its holder."""
        # Each key's usage id -> (tenant, limits) for persisting quota counters.
        self.quotas: dict[str, tuple[str, PlanLimits]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        request_id = str(uuid.uuid4())
        if scope["path"] == METRICS_PATH and scope["method"] == "GET":
            # A scrape is not API traffic: answered, never counted.
            await _send(send, self._metrics(scope))
            return
        try:
            if request_header_bytes(scope) > MAX_HEADER_BYTES:
                answer = _refusal(HEADERS_TOO_LARGE)
            else:
                answer = await self._handle(scope, receive, request_id)
        except ClientGone:
            return
        answer.headers.append(("x-amzn-RequestId", request_id))
        await _send(send, answer)
        seconds = time.perf_counter() - started
        self._record(answer, seconds)
        if not access_log.isEnabledFor(logging.INFO):
            return  # --quiet: not even the arguments are formatted
        access_log.info(
            "%s %s %d %.1f ms%s%s",
            scope["method"],
            scope["path"],
            answer.status,
            seconds * 1000,
            f" -> {answer.function}" if answer.function else "",
            f" (cold start, init {answer.init_ms:.0f} ms)" if answer.init_ms is not None else "",
        )

    def _metrics(self, scope: Scope) -> Answer:
        """Tenant names are the operator's business: aggregates for anyone, a tenant's own
        series with its key, everyone's with the stack's token."""
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in scope["headers"]
        }
        if self.token is not None and bearer_matches(headers, self.token):
            metrics = self.meter.exposition(everyone=True)
        elif "x-api-key" in headers:
            key = self.keys.lookup(headers["x-api-key"])
            if key is None:
                return _refusal(FORBIDDEN)
            metrics = self.meter.exposition(tenant=key.tenant)
        else:
            metrics = self.meter.exposition()
        return Answer(200, [("content-type", CONTENT_TYPE_LATEST)], metrics)

    def _record(self, answer: Answer, seconds: float) -> None:
        headers = {name.lower(): value for name, value in answer.headers}
        model_ms = _server_timing(headers.get("server-timing", ""), "model")
        model = answer.route.rsplit("/", 1)[-1] if "/predict/" in answer.route else None
        self.meter.record(
            Exchange(
                route=answer.route,
                status=answer.status,
                seconds=seconds,
                tenant=answer.tenant,
                function=answer.function,
                model=model,
                version=headers.get("x-model-version"),
                model_ms=model_ms,
                init_ms=answer.init_ms,
                admitted=answer.admitted,
            )
        )

    async def _handle(self, scope: Scope, receive: Receive, request_id: str) -> Answer:
        method, path = scope["method"], scope["path"]
        try:
            match = self.routes.match(method, path)
        except MethodNotDeclared:
            match = None
        if match is None:
            return _refusal(MISSING_TOKEN)
        route = match.route.resource
        headers = [
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]
        ]
        caller = Caller(source_ip=(scope.get("client") or ("127.0.0.1", 0))[0])
        tenant = None
        if match.route.api_key_required:
            presented = next(
                (value for name, value in headers if name.lower() == "x-api-key"), None
            )
            key = self.keys.lookup(presented) if presented else None
            if key is None:
                return _refusal(FORBIDDEN, route)
            tenant = key.tenant
            refused = self._admit(key, route)
            if refused is not None:
                return _refusal(refused, route, tenant)
            caller = Caller(source_ip=caller.source_ip, api_key=key.value, api_key_id=key.key_id)
        body = await read_body(receive)
        if body is None:
            return _refusal(TOO_LARGE, route, tenant)
        event = rest_proxy_event(
            method=method,
            path=path,
            query=_query(scope.get("query_string", b"")),
            headers=headers,
            body=body,
            resource=route,
            path_parameters=match.path_parameters,
            caller=caller,
            stage=self.stage,
            request_id=request_id,
        )
        function = match.route.function
        failed = Answer(0, [], b"", route, function, tenant, admitted=tenant is not None)
        try:
            # API Gateway stops waiting after 29 s, whatever the function's own timeout,
            # and that includes any wait for a free environment and its cold start.
            invocation = await asyncio.wait_for(
                self.pools[function].invoke(event), self.integration_timeout_s
            )
            response = http_response(invocation.result)
        except TimeoutError:
            access_log.error("%s: no answer within %g s", function, self.integration_timeout_s)
            return _refusal(TIMED_OUT, route, tenant, failed)
        except InvocationError as error:
            access_log.error("%s", error)
            return _refusal(INTERNAL_ERROR, route, tenant, failed)
        except BadProxyResult as error:
            access_log.error("%s: malformed Lambda proxy response: %s", function, error)
            return _refusal(INTERNAL_ERROR, route, tenant, failed)
        return Answer(
            response.status,
            list(response.headers),
            response.body,
            route,
            function,
            tenant,
            invocation.init_ms if invocation.cold_start else None,
            admitted=tenant is not None,
        )

    def _admit(self, key: ApiKey, route: str) -> tuple[int, bytes, str] | None:
        """API Gateway's usage-plan checks for this key: None, or the refusal to answer."""
        if not self.plans:
            return None  # a declaration without plans limits nobody
        limits = self.plans.get(key.plan) if key.plan else None
        if limits is None:
            # API Gateway refuses a key that no usage plan of the stage includes.
            return FORBIDDEN
        usage_id = key_id_for(key.value)
        self.quotas[usage_id] = (key.tenant, limits)
        decision = self.limiter.admit(usage_id, limits, route)
        if decision == "throttled":
            return THROTTLED
        if decision == "quota_exceeded":
            return QUOTA_EXCEEDED
        return None


async def _send(send: Send, answer: Answer) -> None:
    headers = [*answer.headers, ("content-length", str(len(answer.body)))]
    await send(
        {
            "type": "http.response.start",
            "status": answer.status,
            "headers": [(name.lower().encode(), value.encode()) for name, value in headers],
        }
    )
    await send({"type": "http.response.body", "body": answer.body})


def _refusal(
    refusal: tuple[int, bytes, str],
    route: str = "-",
    tenant: str | None = None,
    failed: Answer | None = None,
) -> Answer:
    status, body, error_type = refusal
    headers = [("content-type", "application/json"), ("x-amzn-ErrorType", error_type)]
    if failed is not None:  # the request was admitted; its function failed
        return replace(failed, status=status, headers=headers, body=body)
    return Answer(status, headers, body, route, None, tenant)


def _server_timing(header: str, name: str) -> float | None:
    """The `dur` of one metric of a Server-Timing header (RFC: `name;dur=12.5, ...`)."""
    for metric in header.split(","):
        parts = [part.strip() for part in metric.split(";")]
        if parts[0] == name:
            for part in parts[1:]:
                if part.startswith("dur="):
                    try:
                        return float(part[4:])
                    except ValueError:
                        return None
    return None


class ClientGone(Exception):
    """The client disconnected before its request was complete: nothing to invoke."""


async def read_body(receive: Receive, limit: int = MAX_BODY_BYTES) -> bytes | None:
    """The request's body, None past `limit` bytes; ClientGone if the client went away."""
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
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
