"""Handlers for exercising local execution environments: each misbehaves in one way."""

from __future__ import annotations

import json
import os
import time
from typing import Any

INIT_PID = os.getpid()


def echo(event: Any, context: Any) -> dict[str, Any]:
    return {
        "event": event,
        "pid": INIT_PID,
        "function": context.function_name,
        "memory": context.memory_limit_in_mb,
        "remaining_ms": context.get_remaining_time_in_millis(),
    }


def crash(event: Any, context: Any) -> None:
    os._exit(3)


def raise_error(event: Any, context: Any) -> None:
    raise ValueError("bad things")


def sleep(event: Any, context: Any) -> dict[str, Any]:
    time.sleep(float(event["seconds"]))
    return {"slept": event["seconds"], "pid": INIT_PID}


def proxy_echo(event: Any, context: Any) -> dict[str, Any]:
    """Answers like a Lambda behind API Gateway: the event it saw, as the body."""
    body = {
        "path": event["path"],
        "resource": event["resource"],
        "body": event["body"],
        "api_key_id": event["requestContext"]["identity"]["apiKeyId"],
        "request_id": event["requestContext"]["requestId"],
    }
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(body),
    }


def proxy_slow(event: Any, context: Any) -> dict[str, Any]:
    time.sleep(5)
    return {"statusCode": 200, "body": "late"}


def fail_marked(event: Any, context: Any) -> dict[str, Any]:
    """A worker with partial batch responses: the records whose body says "fail" fail."""
    return {
        "batchItemFailures": [
            {"itemIdentifier": record["messageId"]}
            for record in event["Records"]
            if "fail" in record["body"]
        ]
    }


def fail_a_stranger(event: Any, context: Any) -> dict[str, Any]:
    """A partial batch response naming a record that is not in the batch."""
    return {"batchItemFailures": [{"itemIdentifier": "not-a-record-of-this-batch"}]}
