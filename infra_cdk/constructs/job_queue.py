"""The jobs queue and its dead-letter queue (the runtime's functions/runtime/job_queue.py
sends to it; the worker's event source mapping reads it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from constructs import Construct

from infra_cdk.constructs._queues import queue_with_dead_letters

if TYPE_CHECKING:
    from aws_cdk import RemovalPolicy


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
        self.queue, self.dead_letter_queue = queue_with_dead_letters(
            self,
            name=f"{name}-jobs",
            visibility_timeout_s=visibility_timeout_s,
            max_receive_count=max_receive_count,
            ttl_days=ttl_days,
            removal_policy=removal_policy,
        )
