"""The REST API: one stage with access logs, X-Ray and detailed metrics, the resources of
the local gateway's route table (stratoserve/declaration/routes.py: one table, read by both), each
integrated with the `live` alias of the function that serves it; `x-api-key` required on
every route but /health, which the stage throttles instead (no usage plan covers a keyless
method: without it, anyone could invoke the api function as often as they like).

Request validation checks the parameters a method declares (the job id). Bodies are
validated by the functions, not by API Gateway: its body validation answers 400 "Invalid
request body", where the contract (and the local stack) answers 422 naming the field."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from aws_cdk import RemovalPolicy
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_logs as logs
from constructs import Construct

if TYPE_CHECKING:
    from aws_cdk import aws_lambda as lambda_

    from stratoserve.declaration.routes import Route
    from stratoserve.declaration.schema import ThrottleSpec

ACCESS_LOG_FIELDS = {
    "requestId": "$context.requestId",
    "requestTime": "$context.requestTimeEpoch",
    "httpMethod": "$context.httpMethod",
    "resourcePath": "$context.resourcePath",
    "path": "$context.path",
    "status": "$context.status",
    "responseLength": "$context.responseLength",
    "responseLatency": "$context.responseLatency",
    "integrationLatency": "$context.integration.latency",
    "integrationStatus": "$context.integration.status",
    "errorType": "$context.error.responseType",
    "apiKeyId": "$context.identity.apiKeyId",
    "sourceIp": "$context.identity.sourceIp",
    "userAgent": "$context.identity.userAgent",
    "xrayTraceId": "$context.xrayTraceId",
}
"""One JSON line per request. The key's id (which tenant), never its value."""
HEALTH_METHOD = "/health/GET"
"""The stage's method settings key (resource path / HTTP method) of the keyless route."""


class RestApi(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        name: str,
        stage_name: str,
        routes: list[Route],
        aliases: dict[str, lambda_.IFunction],
        log_retention: logs.RetentionDays,
        removal_policy: RemovalPolicy,
        health_throttle: ThrottleSpec,
    ) -> None:
        super().__init__(scope, construct_id)
        self.access_logs = logs.LogGroup(
            self,
            "AccessLogs",
            retention=log_retention,
            removal_policy=removal_policy,
        )
        self.api = apigateway.RestApi(
            self,
            "Api",
            rest_api_name=name,
            description=f"stratoserve: {name}",
            api_key_source_type=apigateway.ApiKeySourceType.HEADER,
            endpoint_types=[apigateway.EndpointType.REGIONAL],
            # API Gateway's logging role is one per account and region: kept when a stack
            # is deleted, so the other stage's logging never loses it.
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=RemovalPolicy.RETAIN,
            deploy_options=apigateway.StageOptions(
                stage_name=stage_name,
                access_log_destination=apigateway.LogGroupLogDestination(self.access_logs),
                access_log_format=apigateway.AccessLogFormat.custom(
                    json.dumps(ACCESS_LOG_FIELDS, separators=(",", ":"))
                ),
                tracing_enabled=True,
                # Per-method metrics: the dashboard's latency per model and the alarms.
                metrics_enabled=True,
                logging_level=apigateway.MethodLoggingLevel.ERROR,
                # Request and response bodies hold tenants' data: never in the logs.
                data_trace_enabled=False,
                method_options={
                    HEALTH_METHOD: apigateway.MethodDeploymentOptions(
                        throttling_rate_limit=health_throttle.rate,
                        throttling_burst_limit=health_throttle.burst,
                    )
                },
            ),
        )
        self.validator = self.api.add_request_validator(
            "ParameterValidator",
            request_validator_name="parameters",
            validate_request_parameters=True,
            validate_request_body=False,
        )
        self.methods: dict[tuple[str, str], apigateway.Method] = {}
        integrations = {
            function: apigateway.LambdaIntegration(alias, proxy=True, allow_test_invoke=False)
            for function, alias in aliases.items()
        }
        for route in routes:
            resource = self._resource(route.resource)
            parameters = {
                f"method.request.path.{part[1:-1]}": True
                for part in route.resource.split("/")
                if part.startswith("{") and not part.endswith("+}")
            }
            for method in sorted(route.methods):
                self.methods[(route.resource, method)] = resource.add_method(
                    method,
                    integrations[route.function],
                    api_key_required=route.api_key_required,
                    request_parameters=parameters or None,
                    request_validator=self.validator if parameters else None,
                    operation_name=f"{method} {route.resource}",
                )

    def _resource(self, path: str) -> apigateway.IResource:
        resource: apigateway.IResource = self.api.root
        for part in path.strip("/").split("/"):
            resource = resource.get_resource(part) or resource.add_resource(part)
        return resource

    def methods_of(self, resource: str) -> list[apigateway.Method]:
        return [method for (path, _), method in sorted(self.methods.items()) if path == resource]
