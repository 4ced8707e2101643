"""The jobs queue and its dead-letter queue (the runtime's functions/runtime/job_queue.py
sends to it; the worker's event source mapping reads it)."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_sqs as sqs
from constructs import Construct

RETENTION_DAYS_MAX = 14
"""SQS keeps a message 14 days at most."""


class JobQueue(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        name: str,
        visibility_timeout_s: int,
        max_receive_count: int,
        ttl_days: int,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        self.dead_letter_queue = sqs.Queue(
            self,
            "DeadLetterQueue",
            queue_name=f"{name}-jobs-dlq",
            retention_period=Duration.days(RETENTION_DAYS_MAX),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            removal_policy=removal_policy,
        )
        self.queue = sqs.Queue(
            self,
            "Queue",
            queue_name=f"{name}-jobs",
            visibility_timeout=Duration.seconds(visibility_timeout_s),
            # A message lives as long as its job, within what SQS allows.
            retention_period=Duration.days(min(ttl_days, RETENTION_DAYS_MAX)),
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.dead_letter_queue, max_receive_count=max_receive_count
            ),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            removal_policy=removal_policy,
        )
