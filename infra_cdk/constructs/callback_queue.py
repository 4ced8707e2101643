"""The callbacks queue and its dead-letter queue (the runtime's
functions/runtime/callback_queue.py sends to it; the worker's second event source mapping
reads it and POSTs each callback, functions/worker/callbacks.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import RemovalPolicy
from aws_cdk import aws_lambda_event_sources as event_sources
from constructs import Construct

from functions.runtime.callback_queue import BATCH_SIZE, MAX_CONCURRENCY
from infra_cdk.constructs._queues import queue_with_dead_letters

if TYPE_CHECKING:
    from aws_cdk import aws_lambda as lambda_


class CallbackQueue(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        name: str,
        visibility_timeout_s: int,
        attempts: int,
        ttl_days: int,
        removal_policy: RemovalPolicy = RemovalPolicy.DESTROY,
    ) -> None:
        super().__init__(scope, construct_id)
        # One POST a delivery: `attempts` deliveries, then the dead-letter queue.
        self.queue, self.dead_letter_queue = queue_with_dead_letters(
            self,
            name=f"{name}-callbacks",
            visibility_timeout_s=visibility_timeout_s,
            max_receive_count=attempts,
            ttl_days=ttl_days,
            removal_policy=removal_policy,
        )

    def grant_queue(self, function: lambda_.IFunction) -> None:
        """What a function that finishes jobs calls: SendMessage (a callback is due)."""
        self.queue.grant(function, "sqs:SendMessage")

    def consume_with(self, alias: lambda_.IFunction) -> None:
        """The worker's second event source mapping (it reads, deletes, and sets a failed
        attempt's backoff: ChangeMessageVisibility, granted here too)."""
        alias.add_event_source(
            event_sources.SqsEventSource(
                self.queue,
                batch_size=BATCH_SIZE,
                report_batch_item_failures=True,
                # Slow receivers hold at most this many worker environments.
                max_concurrency=MAX_CONCURRENCY,
            )
        )
        self.queue.grant(alias, "sqs:ChangeMessageVisibility")
