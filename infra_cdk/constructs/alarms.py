"""The alarms that matter, each published to one SNS topic encrypted with a key CloudWatch
may use: the API's 5XX rate, each predict route's p99 latency, each function's throttles
(and its own error-rate alarm, which its rollout watches too), the oldest queued job, dead
letters (jobs and callbacks) and stuck jobs.

Built into the scope they are given (the Observability construct), not a construct of
their own, so that the topic, its key and the alarms keep the logical ids they were first
deployed with: a new topic would lose its subscriptions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aws_cdk import RemovalPolicy
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions

from infra_cdk.constructs import pascal_case
from infra_cdk.constructs._metrics import FIVE_MINUTES

if TYPE_CHECKING:
    from constructs import Construct

    from infra_cdk.constructs._metrics import Watched


@dataclass(frozen=True)
class Thresholds:
    latency_p99_ms: int
    error_rate: float
    job_age_s: int


def alarm_topic(scope: Construct, *, name: str, alarm_email: str | None) -> sns.Topic:
    key = kms.Key(
        scope,
        "TopicKey",
        description=f"{name}: encrypts the alarm topic",
        enable_key_rotation=True,
        removal_policy=RemovalPolicy.DESTROY,
    )
    # CloudWatch publishes alarms to the encrypted topic with this key.
    key.grant(
        iam.ServicePrincipal("cloudwatch.amazonaws.com"), "kms:Decrypt", "kms:GenerateDataKey*"
    )
    topic = sns.Topic(
        scope, "AlarmTopic", display_name=f"{name} alarms", master_key=key, enforce_ssl=True
    )
    if alarm_email:
        topic.add_subscription(subscriptions.EmailSubscription(alarm_email))
    return topic


def add_alarms(
    scope: Construct, *, topic: sns.Topic, watched: Watched, thresholds: Thresholds
) -> list[cloudwatch.Alarm]:
    """Every alarm, each notifying the topic; the functions' own error-rate alarms too."""
    alarms = _Alarms(scope, topic)
    _api_alarms(alarms, watched, thresholds)
    for function in watched.functions:
        alarms.notify(function.errors_alarm)
        alarms.add(
            pascal_case(function.name) + "ThrottleAlarm",
            function.function.metric_throttles(period=FIVE_MINUTES, statistic="Sum"),
            0,
            f"{function.name} was throttled (reserved or account concurrency exhausted)",
        )
    _job_alarms(alarms, watched, thresholds)
    return alarms.alarms


class _Alarms:
    """Alarms above a threshold in one five-minute period, missing data not breaching."""

    def __init__(self, scope: Construct, topic: sns.Topic) -> None:
        self.scope = scope
        self.topic = topic
        self.alarms: list[cloudwatch.Alarm] = []

    def add(
        self, construct_id: str, metric: cloudwatch.IMetric, threshold: float, description: str
    ) -> None:
        self.notify(
            cloudwatch.Alarm(
                self.scope,
                construct_id,
                metric=metric,
                alarm_description=f"stratoserve: {description}",
                threshold=threshold,
                evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
        )

    def notify(self, alarm: cloudwatch.Alarm) -> None:
        alarm.add_alarm_action(actions.SnsAction(self.topic))
        self.alarms.append(alarm)


def _api_alarms(alarms: _Alarms, watched: Watched, thresholds: Thresholds) -> None:
    api = watched.api
    server_errors = cloudwatch.MathExpression(
        expression="IF(requests > 0, errors / requests, 0)",
        using_metrics={
            "errors": api.metric_server_error(period=FIVE_MINUTES, statistic="Sum"),
            "requests": api.metric_count(period=FIVE_MINUTES, statistic="Sum"),
        },
        period=FIVE_MINUTES,
        label="5XX rate",
    )
    alarms.add(
        "ServerErrorAlarm",
        server_errors,
        thresholds.error_rate,
        f"more than {thresholds.error_rate:.1%} of requests answered 5XX",
    )
    for route in watched.predict_routes:
        alarms.add(
            pascal_case(f"{route.model}-{route.resource.split('/')[1]}") + "LatencyAlarm",
            watched.route_metric(route, "Latency", "p99"),
            thresholds.latency_p99_ms,
            f"{route.resource} p99 latency above {thresholds.latency_p99_ms} ms",
        )


def _job_alarms(alarms: _Alarms, watched: Watched, thresholds: Thresholds) -> None:
    alarms.add(
        "JobAgeAlarm",
        watched.queue.metric_approximate_age_of_oldest_message(
            period=FIVE_MINUTES, statistic="Maximum"
        ),
        thresholds.job_age_s,
        f"the oldest queued job is older than {thresholds.job_age_s} s: the worker is "
        "not keeping up",
    )
    alarms.add(
        "DeadLetterAlarm",
        watched.dead_letter_queue.metric_approximate_number_of_messages_visible(
            period=FIVE_MINUTES, statistic="Maximum"
        ),
        0,
        "job messages reached the dead-letter queue (their jobs ended failed)",
    )
    alarms.add(
        "CallbackDeadLetterAlarm",
        watched.callbacks_dead_letter_queue.metric_approximate_number_of_messages_visible(
            period=FIVE_MINUTES, statistic="Maximum"
        ),
        0,
        "callbacks reached the callbacks dead-letter queue: every attempt to POST them "
        "failed (the job records say why)",
    )
    # Written by a read, or the scheduled sweep, that settles a job no worker will ever
    # run (the job store's on_settled): never claimed (its message was never sent, or
    # dead-lettered before a delivery claimed it), or abandoned by its last delivery.
    alarms.add(
        "StuckJobsAlarm",
        watched.service_metric("StuckJobs"),
        0,
        "jobs were found stuck and failed: queued but never claimed by a worker, or "
        "abandoned by their last delivery (see the functions' 'stuck job' log lines)",
    )
