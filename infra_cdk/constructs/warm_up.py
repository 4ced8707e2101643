"""Scheduled warm-ups (functions.<name>.warmup): an EventBridge rule that invokes the
function's `live` alias with the runtime's own warm-up event. With concurrency N the
function fans the event out to N concurrent invocations of its alias (the runtime's
functions/runtime/warmup.py), so N environments stay warm, not one; it may invoke that
alias and nothing else."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from constructs import Construct

from functions.runtime.warmup import warmup_event

if TYPE_CHECKING:
    from aws_cdk import aws_lambda as lambda_

    from stratoserve.declaration.schema import WarmupSpec


class WarmUp(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        function: lambda_.Function,
        function_name: str,
        alias: lambda_.Alias,
        spec: WarmupSpec,
    ) -> None:
        super().__init__(scope, construct_id)
        self.rule = events.Rule(
            self,
            "Rule",
            description=(
                f"stratoserve: keep {spec.concurrency} environment(s) of {function_name} warm"
            ),
            schedule=events.Schedule.expression(spec.schedule),
            targets=[
                targets.LambdaFunction(
                    alias,
                    event=events.RuleTargetInput.from_object(warmup_event(spec.concurrency)),
                    # A missed warm-up is made up by the next one: no retries, no backlog.
                    retry_attempts=0,
                    max_event_age=Duration.minutes(1),
                )
            ],
        )
        if spec.concurrency > 1:
            # The alias's ARN spelled out from the function's fixed name: a reference to
            # the alias itself would make the function's policy depend on its own version.
            stack = Stack.of(self)
            alias_arn = stack.format_arn(
                service="lambda",
                resource="function",
                resource_name=f"{function_name}:{alias.alias_name}",
                arn_format=ArnFormat.COLON_RESOURCE_NAME,
            )
            function.add_to_role_policy(
                iam.PolicyStatement(actions=["lambda:InvokeFunction"], resources=[alias_arn])
            )
