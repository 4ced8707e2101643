"""The stuck-jobs sweep (jobs.sweep_schedule): an EventBridge rule that invokes the worker's
`live` alias with the runtime's own sweep event (functions/worker/sweep.py). The worker
fails every job that can never run any more and counts them in StuckJobs, which the
dashboard's alarm watches; reading the table this way is granted by JobStore.grant_sweep."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from constructs import Construct

from functions.worker.sweep import SWEEP_EVENT

if TYPE_CHECKING:
    from aws_cdk import aws_lambda as lambda_


class JobSweep(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, alias: lambda_.Alias, schedule: str
    ) -> None:
        super().__init__(scope, construct_id)
        self.rule = events.Rule(
            self,
            "Rule",
            description="stratoserve: fail the jobs that can never run any more",
            schedule=events.Schedule.expression(schedule),
            targets=[
                targets.LambdaFunction(
                    alias,
                    event=events.RuleTargetInput.from_object(SWEEP_EVENT),
                    # The next sweep does the same work: no retries, no backlog.
                    retry_attempts=0,
                    max_event_age=Duration.minutes(5),
                )
            ],
        )
