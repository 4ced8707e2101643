"""What the alarms (alarms.py) and the dashboard (dashboard.py) both read: the resources
watched, and the metrics they share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch

if TYPE_CHECKING:
    from aws_cdk import aws_apigateway as apigateway
    from aws_cdk import aws_sqs as sqs

    from infra_cdk.constructs.declared_function import DeclaredFunction

FIVE_MINUTES = Duration.minutes(5)


@dataclass(frozen=True)
class PredictRoute:
    model: str
    resource: str
    """"/v2/predict/embed": API Gateway's per-method metrics carry it as a dimension."""


@dataclass(frozen=True)
class Watched:
    """The service as an operator watches it."""

    metrics_namespace: str
    """Where the functions write their own metrics (EMF), with a `service` dimension."""
    service: str
    api: apigateway.RestApi
    predict_routes: list[PredictRoute]
    functions: list[DeclaredFunction]
    queue: sqs.Queue
    dead_letter_queue: sqs.Queue
    callbacks_dead_letter_queue: sqs.Queue

    def route_metric(self, route: PredictRoute, metric: str, statistic: str) -> cloudwatch.Metric:
        return cloudwatch.Metric(
            namespace="AWS/ApiGateway",
            metric_name=metric,
            dimensions_map={
                "ApiName": self.api.rest_api_name,
                "Stage": self.api.deployment_stage.stage_name,
                "Resource": route.resource,
                "Method": "POST",
            },
            statistic=statistic,
            period=FIVE_MINUTES,
            label=f"{route.resource} {statistic}",
        )

    def service_metric(
        self, metric: str, *, label: str | None = None, **dimensions: str
    ) -> cloudwatch.Metric:
        """One of the functions' own metrics, summed over five minutes."""
        return cloudwatch.Metric(
            namespace=self.metrics_namespace,
            metric_name=metric,
            dimensions_map={"service": self.service, **dimensions},
            statistic="Sum",
            period=FIVE_MINUTES,
            label=label,
        )
