"""What an operator watches: one CloudWatch dashboard of requests, 4XX/5XX, p50/p99
latency per model, cold starts, throttles and errors, queue depth and age, dead letters,
job outcomes per backend, and the alarms' states. It reads the names and dimensions the
runtime writes (functions/runtime/observability.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch

from infra_cdk.constructs._metrics import FIVE_MINUTES

if TYPE_CHECKING:
    from constructs import Construct

    from infra_cdk.constructs._metrics import Watched

WIDTH = 12
JOB_OUTCOMES = (
    ("lambda", "succeeded"),
    ("lambda", "failed"),
    ("modal", "succeeded"),
    ("modal", "failed"),
    ("modal", "fallback"),
)


class Dashboard(cloudwatch.Dashboard):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        name: str,
        watched: Watched,
        alarms: list[cloudwatch.Alarm],
    ) -> None:
        super().__init__(
            scope, construct_id, dashboard_name=name, default_interval=Duration.hours(3)
        )
        self.add_widgets(*_requests(watched))
        self.add_widgets(*_functions(watched))
        self.add_widgets(*_jobs(watched))
        self.add_widgets(
            cloudwatch.AlarmStatusWidget(title="Alarms", alarms=alarms, width=2 * WIDTH)
        )


def _requests(watched: Watched) -> list[cloudwatch.IWidget]:
    api = watched.api
    return [
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
                watched.route_metric(route, "Latency", statistic)
                for route in watched.predict_routes
                for statistic in ("p50", "p99")
            ],
            width=WIDTH,
        ),
    ]


def _functions(watched: Watched) -> list[cloudwatch.IWidget]:
    functions = watched.functions
    return [
        cloudwatch.GraphWidget(
            title="Cold starts",
            left=[
                watched.service_metric(
                    "ColdStart", label=function.name, function_name=function.name
                )
                for function in functions
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
    ]


def _jobs(watched: Watched) -> list[cloudwatch.IWidget]:
    queue = watched.queue
    return [
        cloudwatch.GraphWidget(
            title="Jobs queue: depth and oldest message (s)",
            left=[
                queue.metric_approximate_number_of_messages_visible(period=FIVE_MINUTES),
                watched.dead_letter_queue.metric_approximate_number_of_messages_visible(
                    period=FIVE_MINUTES, label="dead letters"
                ),
            ],
            right=[queue.metric_approximate_age_of_oldest_message(period=FIVE_MINUTES)],
            width=WIDTH,
        ),
        cloudwatch.GraphWidget(
            title="Job outcomes per backend",
            left=[
                watched.service_metric(
                    "JobOutcomes", label=f"{backend} {outcome}", backend=backend, outcome=outcome
                )
                for backend, outcome in JOB_OUTCOMES
            ],
            width=WIDTH,
        ),
    ]
