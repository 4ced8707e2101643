"""Test helpers for moto: the local stack's moto server on a free port, reset its state
(kept per process, across server instances), a client that tries once, empty a queue."""

from __future__ import annotations

import contextlib
import urllib.request
from typing import TYPE_CHECKING, Any

from stratoserve.local.aws import DUMMY_CREDENTIALS, REGION, LocalAws

if TYPE_CHECKING:
    from collections.abc import Iterator


@contextlib.contextmanager
def local_aws() -> Iterator[LocalAws]:
    """LocalAws on a free port; afterwards up again if a test left it down (to reset it),
    reset, and stopped."""
    local = LocalAws()
    url = local.start()
    try:
        yield local
    finally:
        if not local.up:
            local.start(local.port)
        reset_moto(url)
        local.stop()


def one_try_client(service: str, url: str) -> Any:
    """A boto3 client that tries once: an outage shows as the first call's error."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        service,
        endpoint_url=url,
        region_name=REGION,
        config=Config(retries={"total_max_attempts": 1}),
        **DUMMY_CREDENTIALS,
    )


def reset_moto(endpoint_url: str) -> None:
    """Reset a LocalAws made without a token (its secret is the test credentials')."""
    secret = DUMMY_CREDENTIALS["aws_secret_access_key"]
    request = urllib.request.Request(
        f"{endpoint_url}/moto-api/reset",
        method="POST",
        headers={"Authorization": f"Bearer {secret}"},
    )
    with urllib.request.urlopen(request, timeout=10):
        pass


def drain(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    """Every message on the queue, removed from it."""
    messages: list[dict[str, Any]] = []
    while True:
        batch = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not batch:
            return messages
        for message in batch:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        messages.extend(batch)
