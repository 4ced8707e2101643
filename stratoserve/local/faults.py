"""The local stack's fault API, for chaos testing from outside the `stratoserve dev`
process (in spirit LocalStack's chaos API; the GPU executor's `/faults` is its sibling).

It is served on the local Lambda Invoke API's port, behind the same checks (loopback.py:
Host 127.0.0.1/localhost, no Origin, JSON bodies, and `Authorization: Bearer <token>`
with the token of `.stratoserve/stack.json`), under `/_stratoserve/faults`:

    GET  /_stratoserve/faults               -> {"aws": {"up", "restarts", "endpoint_url"}}
    POST /_stratoserve/faults/aws-restart   {"down_s": 3}
         -> 202 {"aws": "down", "down_s", "endpoint_url"} once the local AWS (moto) is
            down; it serves again on the same port, with the same queues, tables and
            buckets, `down_s` seconds later. 409 while a restart is under way.

While it is down, every boto3 call of the stack (poller, functions, CLI) meets a refused
connection, and the calls in flight lose their answers (they may have been carried out),
as clients of AWS see in an outage of its endpoint.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import orjson

from stratoserve.local.aws import LocalAwsError
from stratoserve.local.gateway import ClientGone, read_body
from stratoserve.local.tasks import cancel_all

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

    from stratoserve.local.aws import LocalAws

logger = logging.getLogger("stratoserve.faults")

PREFIX = "/_stratoserve/faults"
DEFAULT_DOWN_S = 3.0
MAX_DOWN_S = 300.0
MAX_BODY_BYTES = 4096


class FaultsApi:
    def __init__(self, aws: LocalAws) -> None:
        self.aws = aws
        self._restarting: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            status, body = await self._handle(scope, receive)
        except ClientGone:
            return
        payload = orjson.dumps(body)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def close(self) -> None:
        """Stop waiting on a restart (the stack stops its AWS itself)."""
        if self._restarting is not None:
            await cancel_all([self._restarting])

    async def _handle(self, scope: Scope, receive: Receive) -> tuple[int, dict[str, Any]]:
        path, method = scope["path"].rstrip("/"), scope["method"]
        if path == PREFIX and method == "GET":
            return 200, {"aws": self._aws_state()}
        if path == f"{PREFIX}/aws-restart" and method == "POST":
            raw = await read_body(receive, MAX_BODY_BYTES)
            down_s = _down_s(raw)
            if isinstance(down_s, str):
                return 400, {"message": down_s}
            return await self._restart_aws(down_s)
        return 404, {
            "message": f"no fault API {method} {path}: GET {PREFIX} or POST {PREFIX}/aws-restart"
        }

    async def _restart_aws(self, down_s: float) -> tuple[int, dict[str, Any]]:
        if self._restarting is not None and not self._restarting.done():
            return 409, {"message": "the local AWS is restarting already", "aws": self._aws_state()}
        loop = asyncio.get_running_loop()
        down = asyncio.Event()
        failure: list[str] = []

        def on_down() -> None:
            loop.call_soon_threadsafe(down.set)

        async def restart() -> None:
            try:
                await asyncio.to_thread(self.aws.restart, down_s, on_down=on_down)
            except LocalAwsError as error:
                logger.error("the local AWS was not restarted: %s", error)
                failure.append(str(error))

        self._restarting = task = asyncio.create_task(restart())
        # Answer once it is down (a client may check that at once), or why it is not.
        waiting = asyncio.create_task(down.wait())
        await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if not down.is_set():
            return 500, {"message": f"the local AWS was not restarted: {''.join(failure)}"}
        return 202, {"aws": "down", "down_s": down_s, "endpoint_url": self.aws.endpoint_url}

    def _aws_state(self) -> dict[str, Any]:
        return {
            "up": self.aws.up,
            "restarts": self.aws.restarts,
            "endpoint_url": self.aws.endpoint_url,
        }


def _down_s(raw: bytes | None) -> float | str:
    """The body's down_s, or what is wrong with the body."""
    if raw is None:
        return f"the body must be at most {MAX_BODY_BYTES} bytes"
    try:
        body = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError as error:
        return f"the body is not JSON: {error}"
    if not isinstance(body, dict) or set(body) - {"down_s"}:
        return 'the body must be a JSON object like {"down_s": 3}'
    down_s = body.get("down_s", DEFAULT_DOWN_S)
    if isinstance(down_s, bool) or not isinstance(down_s, int | float):
        return '"down_s" must be a number of seconds'
    if not 0 <= down_s <= MAX_DOWN_S:
        return f'"down_s" must be between 0 and {MAX_DOWN_S:g} seconds'
    return float(down_s)
