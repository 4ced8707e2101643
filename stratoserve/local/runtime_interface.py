"""The inside of one local Lambda execution environment (run as `python -m ...`).

Like Lambda's runtime interface client it imports the handler named by `_HANDLER` (that is
the init phase: the real cold start), then answers invocations one at a time for as long
as the environment lives. Events and results travel as frames over two inherited pipes,
so the handler's stdout and stderr stay its logs, as on Lambda.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
import traceback
from typing import IO, TYPE_CHECKING, Any

from stratoserve.local.framing import HEADER, decode, encode

if TYPE_CHECKING:
    from collections.abc import Callable

PIPES_ENV = "STRATOSERVE_RUNTIME_PIPES"
RECEIVED = encode({"received": True})


class LocalLambdaContext:
    """The attributes and method of Lambda's context object that handlers use."""

    def __init__(self, request_id: str, deadline_ms: int) -> None:
        self.aws_request_id = request_id
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "local")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"))
        region = os.environ.get("AWS_REGION", "us-east-1")
        self.invoked_function_arn = (
            f"arn:aws:lambda:{region}:123456789012:function:{self.function_name}"
        )
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = "local"
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._deadline_ms - int(time.time() * 1000))


def _read_frame(stream: IO[bytes]) -> Any | None:
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    (length,) = HEADER.unpack(header)
    return decode(stream.read(length))


def _error(error: BaseException) -> dict[str, Any]:
    return {"errorType": type(error).__name__, "errorMessage": str(error)}


def _load_handler(name: str) -> Callable[[Any, Any], Any]:
    module_name, _, attribute = name.rpartition(".")
    handler: Callable[[Any, Any], Any] = getattr(importlib.import_module(module_name), attribute)
    return handler


def main() -> int:
    read_fd, write_fd = (int(fd) for fd in os.environ[PIPES_ENV].split(","))
    with os.fdopen(read_fd, "rb") as events, os.fdopen(write_fd, "wb", buffering=0) as replies:
        started = time.perf_counter()
        try:
            handler = _load_handler(os.environ["_HANDLER"])
        except Exception as error:
            traceback.print_exc()
            replies.write(encode({"init_error": _error(error)}))
            return 1
        replies.write(encode({"ready": True, "init_ms": (time.perf_counter() - started) * 1000}))
        while (frame := _read_frame(events)) is not None:
            # Receipt first: an environment that dies before this was never sent the event,
            # and the gateway may give it to another one, as Lambda would.
            replies.write(RECEIVED)
            context = LocalLambdaContext(frame["request_id"], frame["deadline_ms"])
            try:
                reply = {"result": handler(frame["event"], context)}
            except Exception as error:
                traceback.print_exc()
                reply = {"error": _error(error)}
            replies.write(encode(reply))
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
