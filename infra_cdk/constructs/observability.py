"""What an operator watches: the alarms that matter, published to one encrypted SNS topic
(alarms.py), and one CloudWatch dashboard (dashboard.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from constructs import Construct

from infra_cdk.constructs._metrics import PredictRoute, Watched
from infra_cdk.constructs.alarms import Thresholds, add_alarms, alarm_topic
from infra_cdk.constructs.dashboard import Dashboard

if TYPE_CHECKING:
    from aws_cdk import aws_apigateway as apigateway
    from aws_cdk import aws_sqs as sqs

    from infra_cdk.constructs.declared_function import DeclaredFunction

__all__ = ["Observability", "PredictRoute", "Thresholds"]


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
        watched = Watched(
            metrics_namespace=metrics_namespace,
            service=service,
            api=api,
            predict_routes=predict_routes,
            functions=functions,
            queue=queue,
            dead_letter_queue=dead_letter_queue,
            callbacks_dead_letter_queue=callbacks_dead_letter_queue,
        )
        self.topic = alarm_topic(self, name=name, alarm_email=alarm_email)
        self.alarms = add_alarms(self, topic=self.topic, watched=watched, thresholds=thresholds)
        self.dashboard = Dashboard(
            self, "Dashboard", name=name, watched=watched, alarms=self.alarms
        )
