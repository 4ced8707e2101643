"""What an operator watches: one CloudWatch dashboard (requests, 4XX/5XX, p50/p99 latency
per model, cold starts, throttles, queue depth and age, dead letters, job outcomes per
backend) and the alarms that matter, published to one SNS topic (encrypted with a key
CloudWatch may use)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from infra_cdk.constructs import pascal_case

if TYPE_CHECKING:
    from aws_cdk import aws_apigateway as apigateway
    from aws_cdk import aws_sqs as sqs

    from infra_cdk.constructs.declared_function import DeclaredFunction

FIVE_MINUTES = Duration.minutes(5)
WIDTH = 12


@dataclass(frozen=True)
class Thresholds:
    latency_p99_ms: int
    error_rate: float
    job_age_s: int


@dataclass(frozen=True)
class PredictRoute:
    model: str
    resource: str
    """"/v2/predict/embed": API Gateway's per-method metrics carry it as a dimension."""


class Observability(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        name: str,
        metrics_namespace: str,
        service: str,
        api: apigateway.RestApi,
        predict_routes: list[PredictRoute],
        functions: list[DeclaredFunction],
        queue: sqs.Queue,
        dead_letter_queue: sqs.Queue,
        callbacks_dead_letter_queue: sqs.Queue,
        thresholds: Thresholds,
        alarm_email: str | None,
    ) -> None:
        super().__init__(scope, construct_id)
        key = kms.Key(
            self,
            "TopicKey",
            description=f"{name}: encrypts the alarm topic",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.DESTROY,
        )
        # CloudWatch publishes alarms to the encrypted topic with this key.
        key.grant(
            iam.ServicePrincipal("cloudwatch.amazonaws.com"), "kms:Decrypt", "kms:GenerateDataKey*"
        )
        self.topic = sns.Topic(
            self, "AlarmTopic", display_name=f"{name} alarms", master_key=key, enforce_ssl=True
        )
        if alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(alarm_email))
        self.alarms: list[cloudwatch.Alarm] = []
        stage = api.deployment_stage.stage_name
        api_name = api.rest_api_name

        def route_metric(route: PredictRoute, metric: str, statistic: str) -> cloudwatch.Metric:
            return cloudwatch.Metric(
                namespace="AWS/ApiGateway",
                metric_name=metric,
                dimensions_map={
                    "ApiName": api_name,
                    "Stage": stage,
                    "Resource": route.resource,
                    "Method": "POST",
                },
                statistic=statistic,
                period=FIVE_MINUTES,
                label=f"{route.resource} {statistic}",
            )

        # --- alarms --------------------------------------------------------------------
        server_errors = cloudwatch.MathExpression(
            expression="IF(requests > 0, errors / requests, 0)",
            using_metrics={
                "errors": api.metric_server_error(period=FIVE_MINUTES, statistic="Sum"),
                "requests": api.metric_count(period=FIVE_MINUTES, statistic="Sum"),
            },
            period=FIVE_MINUTES,
            label="5XX rate",
        )
        self._alarm(
            "ServerErrorAlarm",
            server_errors,
            thresholds.error_rate,
            f"more than {thresholds.error_rate:.1%} of requests answered 5XX",
        )
        for route in predict_routes:
            self._alarm(
                pascal_case(f"{route.model}-{route.resource.split('/')[1]}") + "LatencyAlarm",
                route_metric(route, "Latency", "p99"),
                thresholds.latency_p99_ms,
                f"{route.resource} p99 latency above {thresholds.latency_p99_ms} ms",
            )
        for function in functions:
            self.alarms.append(function.errors_alarm)
            function.errors_alarm.add_alarm_action(actions.SnsAction(self.topic))
            self._alarm(
                pascal_case(function.name) + "ThrottleAlarm",
                function.function.metric_throttles(period=FIVE_MINUTES, statistic="Sum"),
                0,
                f"{function.name} was throttled (reserved or account concurrency exhausted)",
            )
        self._alarm(
            "JobAgeAlarm",
            queue.metric_approximate_age_of_oldest_message(
                period=FIVE_MINUTES, statistic="Maximum"
            ),
            thresholds.job_age_s,
            f"the oldest queued job is older than {thresholds.job_age_s} s: the worker is "
            "not keeping up",
        )
        self._alarm(
            "DeadLetterAlarm",
            dead_letter_queue.metric_approximate_number_of_messages_visible(
                period=FIVE_MINUTES, statistic="Maximum"
            ),
            0,
            "job messages reached the dead-letter queue (their jobs ended failed)",
        )
        self._alarm(
            "CallbackDeadLetterAlarm",
            callbacks_dead_letter_queue.metric_approximate_number_of_messages_visible(
                period=FIVE_MINUTES, statistic="Maximum"
            ),
            0,
            "callbacks reached the callbacks dead-letter queue: every attempt to POST them "
            "failed (the job records say why)",
        )

        # Written by a read, or the scheduled sweep, that settles a job no worker will ever
        # run (the job store's on_settled): never claimed (its message was never sent, or
        # dead-lettered before a delivery claimed it), or abandoned by its last delivery.
        self._alarm(
            "StuckJobsAlarm",
            cloudwatch.Metric(
                namespace=metrics_namespace,
                metric_name="StuckJobs",
                dimensions_map={"service": service},
                statistic="Sum",
                period=FIVE_MINUTES,
            ),
            0,
            "jobs were found stuck and failed: queued but never claimed by a worker, or "
            "abandoned by their last delivery (see the functions' 'stuck job' log lines)",
        )

        # --- dashboard -----------------------------------------------------------------
        function_names = [function.name for function in functions]
        self.dashboard = cloudwatch.Dashboard(
            self, "Dashboard", dashboard_name=name, default_interval=Duration.hours(3)
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Requests",
                left=[api.metric_count(period=FIVE_MINUTES, statistic="Sum")],
                right=[
                    api.metric_client_error(period=FIVE_MINUTES, statistic="Sum"),
                    api.metric_server_error(period=FIVE_MINUTES, statistic="Sum"),
                ],
                width=WIDTH,
            ),
            cloudwatch.GraphWidget(
                title="Predict latency per model (p50, p99)",
                left=[
                    route_metric(route, "Latency", statistic)
                    for route in predict_routes
                    for statistic in ("p50", "p99")
                ],
                width=WIDTH,
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Cold starts",
                left=[
                    cloudwatch.Metric(
                        namespace=metrics_namespace,
                        metric_name="ColdStart",
                        dimensions_map={"service": service, "function_name": function},
                        statistic="Sum",
                        period=FIVE_MINUTES,
                        label=function,
                    )
                    for function in function_names
                ],
                width=WIDTH,
            ),
            cloudwatch.GraphWidget(
                title="Throttles and errors",
                left=[
                    function.function.metric_throttles(period=FIVE_MINUTES, statistic="Sum")
                    for function in functions
                ],
                right=[
                    function.function.metric_errors(period=FIVE_MINUTES, statistic="Sum")
                    for function in functions
                ],
                width=WIDTH,
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Jobs queue: depth and oldest message (s)",
                left=[
                    queue.metric_approximate_number_of_messages_visible(period=FIVE_MINUTES),
                    dead_letter_queue.metric_approximate_number_of_messages_visible(
                        period=FIVE_MINUTES, label="dead letters"
                    ),
                ],
                right=[queue.metric_approximate_age_of_oldest_message(period=FIVE_MINUTES)],
                width=WIDTH,
            ),
            cloudwatch.GraphWidget(
                title="Job outcomes per backend",
                left=[
                    cloudwatch.Metric(
                        namespace=metrics_namespace,
                        metric_name="JobOutcomes",
                        dimensions_map={
                            "service": service,
                            "backend": backend,
                            "outcome": outcome,
                        },
                        statistic="Sum",
                        period=FIVE_MINUTES,
                        label=f"{backend} {outcome}",
                    )
                    for backend, outcome in (
                        ("lambda", "succeeded"),
                        ("lambda", "failed"),
                        ("modal", "succeeded"),
                        ("modal", "failed"),
                        ("modal", "fallback"),
                    )
                ],
                width=WIDTH,
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.AlarmStatusWidget(title="Alarms", alarms=self.alarms, width=2 * WIDTH)
        )

    def _alarm(
        self, construct_id: str, metric: cloudwatch.IMetric, threshold: float, description: str
    ) -> cloudwatch.Alarm:
        alarm = cloudwatch.Alarm(
            self,
            construct_id,
            metric=metric,
            alarm_description=f"stratoserve: {description}",
            threshold=threshold,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(actions.SnsAction(self.topic))
        self.alarms.append(alarm)
        return alarm
