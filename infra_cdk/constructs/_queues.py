"""What the jobs queue and the callbacks queue share: an SQS queue whose messages move to a
dead-letter queue of its own after `max_receive_count` deliveries, both encrypted and
refusing anything but TLS."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import Duration
from aws_cdk import aws_sqs as sqs

if TYPE_CHECKING:
    from aws_cdk import RemovalPolicy
    from constructs import Construct

RETENTION_DAYS_MAX = 14
"""SQS keeps a message 14 days at most."""


def queue_with_dead_letters(
    scope: Construct,
    *,
    name: str,
    visibility_timeout_s: int,
    max_receive_count: int,
    ttl_days: int,
    removal_policy: RemovalPolicy,
) -> tuple[sqs.Queue, sqs.Queue]:
    """The queue `name` and its dead-letter queue `name-dlq`, as (queue, dead letters)."""
    dead_letter_queue = sqs.Queue(
        scope,
        "DeadLetterQueue",
        queue_name=f"{name}-dlq",
        retention_period=Duration.days(RETENTION_DAYS_MAX),
        encryption=sqs.QueueEncryption.SQS_MANAGED,
        enforce_ssl=True,
        removal_policy=removal_policy,
    )
    queue = sqs.Queue(
        scope,
        "Queue",
        queue_name=name,
        # At least the consuming function's timeout, as Lambda requires of an event source.
        visibility_timeout=Duration.seconds(visibility_timeout_s),
        # A message lives as long as its job, within what SQS allows.
        retention_period=Duration.days(min(ttl_days, RETENTION_DAYS_MAX)),
        dead_letter_queue=sqs.DeadLetterQueue(
            queue=dead_letter_queue, max_receive_count=max_receive_count
        ),
        encryption=sqs.QueueEncryption.SQS_MANAGED,
        enforce_ssl=True,
        removal_policy=removal_policy,
    )
    return queue, dead_letter_queue
