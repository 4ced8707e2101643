"""The Lambda Invoke API of the local functions: what boto3's lambda client (with
`endpoint_url`) or `aws lambda invoke --endpoint-url` calls, answered from the same
function pools the gateway invokes.

`POST /2015-03-31/functions/{FunctionName}/invocations`, FunctionName a name,
`name:qualifier` or an ARN (what a local function's context gives as its invoked ARN).
Every qualifier names the one local version. As Lambda answers: 200 with the
handler's result as JSON; a handler that raised, crashed or timed out is still 200, with
`X-Amz-Function-Error: Unhandled` and the error as JSON; `Event` is 202 (run in the
background), `DryRun` 204. A function whose environments are all busy is throttled
(429 TooManyRequestsException), as reserved concurrency would: waiting could deadlock a
warm-up whose origin holds the last environment its targets need.

It listens on its own loopback port, not the gateway's: it has no API keys, and on AWS,
too, Lambda's endpoint is not the API's. As Lambda does, it wants to know who calls: a
request signed (SigV4) with the stack's credentials (access key id `local`, the secret
the token in `.stratoserve/stack.json`), as boto3 and the AWS CLI sign, or `Authorization:
Bearer <token>`; from Host 127.0.0.1/localhost, without an Origin, with a JSON body or,
as boto3's Invoke sends it, a body without a Content-Type (loopback.py). Without that,
any web page or local user could run any function with a made-up API Gateway event, as
any tenant. The local stack's own control paths (`/_stratoserve/...`, the fault API of
faults.py) are served here behind the same checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from typing import TYPE_CHECKING, Any

import orjson

from stratoserve.local.environments import AtConcurrencyLimit, InvocationError
from stratoserve.local.gateway import ClientGone, read_body
from stratoserve.local.loopback import check_content_type, check_origin, check_token
from stratoserve.local.tasks import cancel_all

if TYPE_CHECKING:
    import socket
    from collections.abc import Iterator, Mapping

    from starlette.types import Message, Receive, Scope, Send

    from stratoserve.local.environments import FunctionPool
    from stratoserve.local.faults import FaultsApi

logger = logging.getLogger("stratoserve.lambda")

# Lambda's synchronous invocation payload limit.
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<function>[^/]+)/invocations$")
INVOCATION_TYPES = ("RequestResponse", "Event", "DryRun")
CONTROL_PREFIX = "/_stratoserve/"
"""The local stack's own paths: no Lambda API path starts so."""

Headers = list[tuple[str, str]]


class LambdaApi:
    def __init__(
        self, pools: Mapping[str, FunctionPool], faults: FaultsApi | None = None, *, token: str
    ) -> None:
        self.pools = pools
        self.faults = faults
        self.token = token
        self._background: set[asyncio.Task[None]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request_id = str(uuid.uuid4())
        try:
            refused = await self._refusal(scope, receive)
            if isinstance(refused, bytes):
                receive = _replay(refused, receive)
                if self.faults is not None and scope["path"].startswith(CONTROL_PREFIX):
                    await self.faults(scope, receive, send)
                    return
                status, headers, body = await self._handle(scope, receive, request_id)
            else:
                status, headers, body = refused
        except ClientGone:
            return
        headers = [
            *headers,
            ("x-amzn-RequestId", request_id),
            ("content-length", str(len(body))),
        ]
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(name.lower().encode(), value.encode()) for name, value in headers],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def close(self) -> None:
        """Cancel the `Event` invocations still running."""
        await cancel_all(self._background)
        if self.faults is not None:
            await self.faults.close()

    async def _refusal(self, scope: Scope, receive: Receive) -> tuple[int, Headers, bytes] | bytes:
        """The answer to a caller the loopback checks refuse; else the request's body (read
        here: a signature covers it)."""
        headers = {
            key.decode("latin-1").lower(): value.decode("latin-1")
            for key, value in scope["headers"]
        }
        port = int((scope.get("server") or ("", 0))[1] or 0)
        # boto3's Invoke sends its payload without a Content-Type; the control paths are
        # called with JSON only.
        invoking = not scope["path"].startswith(CONTROL_PREFIX)
        refusal = check_origin(headers, port) or check_content_type(
            scope["method"], headers, allow_missing=invoking
        )
        if refusal is not None:
            return _error(refusal.status, refusal.error_type, refusal.message)
        body = await read_body(receive, MAX_PAYLOAD_BYTES)
        if body is None:
            return _error(
                413,
                "RequestTooLargeException",
                f"Request must be smaller than {MAX_PAYLOAD_BYTES} bytes for the "
                "InvokeFunction operation",
            )
        refusal = check_token(
            method=scope["method"],
            raw_path=scope.get("raw_path", scope["path"].encode()).decode("latin-1"),
            raw_query=scope.get("query_string", b"").decode("latin-1"),
            headers=headers,
            body=body,
            token=self.token,
        )
        if refusal is not None:
            return _error(refusal.status, refusal.error_type, refusal.message)
        return body

    async def _handle(
        self, scope: Scope, receive: Receive, request_id: str
    ) -> tuple[int, Headers, bytes]:
        # The decoded path: boto3 percent-encodes an ARN's colons.
        matched = INVOKE_PATH.match(scope["path"])
        if matched is None or scope["method"] != "POST":
            return _error(404, "UnknownOperationException", "Unknown operation")
        requested = matched["function"]
        name = function_name(requested)
        pool = self.pools.get(name or "")
        if pool is None:
            return _error(404, "ResourceNotFoundException", f"Function not found: {requested}")
        headers = {
            key.decode("latin-1").lower(): value.decode("latin-1")
            for key, value in scope["headers"]
        }
        invocation_type = headers.get("x-amz-invocation-type", "RequestResponse")
        if invocation_type not in INVOCATION_TYPES:
            return _error(
                400,
                "InvalidParameterValueException",
                f"Invalid InvocationType {invocation_type!r}: must be one of "
                f"{', '.join(INVOCATION_TYPES)}",
            )
        payload = await read_body(receive, MAX_PAYLOAD_BYTES)
        if payload is None:
            return _error(
                413,
                "RequestTooLargeException",
                f"Request must be smaller than {MAX_PAYLOAD_BYTES} bytes for the "
                "InvokeFunction operation",
            )
        try:
            event = orjson.loads(payload) if payload.strip() else {}
        except orjson.JSONDecodeError as error:
            return _error(
                400,
                "InvalidRequestContentException",
                f"Could not parse request body into json: {error}",
            )
        executed = [("X-Amz-Executed-Version", "$LATEST")]
        if invocation_type == "DryRun":
            return 204, executed, b""
        if invocation_type == "Event":
            task = asyncio.create_task(self._invoke_in_background(pool, event, request_id))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return 202, [], b""
        try:
            invocation = await pool.invoke(event, request_id=request_id, wait=False)
        except AtConcurrencyLimit:
            return _error(
                429,
                "TooManyRequestsException",
                "Rate Exceeded.",
                reason="ReservedFunctionConcurrentInvocationLimitExceeded",
            )
        except InvocationError as error:
            logger.warning("%s", error)
            failed = [*executed, ("X-Amz-Function-Error", "Unhandled")]
            return 200, [*failed, _JSON], orjson.dumps(function_error(error, request_id))
        return 200, [*executed, _JSON], orjson.dumps(invocation.result)

    async def _invoke_in_background(self, pool: FunctionPool, event: Any, request_id: str) -> None:
        """An `Event` invocation: queued until an environment is free, as Lambda's
        asynchronous queue does; its failure is only logged."""
        try:
            await pool.invoke(event, request_id=request_id)
        except InvocationError as error:
            logger.warning("%s (asynchronous invocation %s)", error, request_id)


_JSON = ("Content-Type", "application/json")


def _replay(body: bytes, receive: Receive) -> Receive:
    """`receive` for a request whose body was read already: the body, then the client's
    own messages (a disconnect)."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def function_name(requested: str) -> str | None:
    """The function a FunctionName names: `name`, `name:qualifier`, a full or partial ARN
    (`arn:aws:lambda:us-east-1:123456789012:function:name[:qualifier]`,
    `123456789012:function:name`); None when it is none of those."""
    parts = requested.split(":")
    if parts[0] == "arn":
        valid = len(parts) in (7, 8) and parts[2] == "lambda" and parts[5] == "function"
        name = parts[6] if valid else ""
    elif len(parts) in (3, 4) and parts[1] == "function":
        name = parts[2]
    elif len(parts) <= 2:
        name = parts[0]
    else:
        name = ""
    return name or None


def function_error(error: InvocationError, request_id: str) -> dict[str, Any]:
    """The payload Lambda returns for an unhandled function error."""
    if error.error is not None:
        return {**error.error, "requestId": request_id, "stackTrace": []}
    if error.timed_out:
        return {
            "errorType": "Sandbox.Timedout",
            "errorMessage": f"RequestId: {request_id} Error: {error}",
        }
    return {
        "errorType": "Runtime.ExitError",
        "errorMessage": f"RequestId: {request_id} Error: {error}",
    }


def _error(
    status: int, error_type: str, message: str, *, reason: str | None = None
) -> tuple[int, Headers, bytes]:
    """Lambda's service errors: the type in `x-amzn-ErrorType`, where botocore reads it."""
    body: dict[str, str] = {"Type": "User", "message": message}
    if reason is not None:
        body["Reason"] = reason
    return status, [_JSON, ("x-amzn-ErrorType", error_type)], orjson.dumps(body)


class LambdaEndpoint:
    """The Invoke API's own HTTP server on `sock`, in the gateway's event loop. The
    gateway's server owns the process's signals; this one stops when told to."""

    def __init__(self, api: LambdaApi, sock: socket.socket) -> None:
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield

        self.api = api
        self._sock = sock
        self._server = Server(
            uvicorn.Config(
                api,
                log_level="warning",
                lifespan="off",
                access_log=False,
                timeout_graceful_shutdown=2,
            )
        )
        self._serving: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._serving = asyncio.create_task(self._server.serve(sockets=[self._sock]))

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._serving is not None:
            # Ctrl-C cancels the stack's own task too: the rest of its shutdown must run.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._serving
        await self.api.close()
