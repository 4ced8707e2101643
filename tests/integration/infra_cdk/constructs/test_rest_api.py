"""The REST API: the local gateway's route table, keyed everywhere but /health, each route
on the `live` alias of the function that serves it, one logged and traced stage."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from aws_cdk.assertions import Match

from infra_cdk.constructs.rest_api import ACCESS_LOG_FIELDS
from stratoserve.declaration.routes import RouteTable

if TYPE_CHECKING:
    from stratoserve.declaration import Declaration
    from tests.integration.infra_cdk.conftest import Synth


def _paths(synth: Synth) -> dict[str, str]:
    """Logical id of each ApiGateway::Resource -> its full path."""
    resources = synth.resources("AWS::ApiGateway::Resource")
    paths: dict[str, str] = {}

    def path_of(logical_id: str) -> str:
        if logical_id not in paths:
            properties = resources[logical_id]["Properties"]
            parent = properties["ParentId"]
            prefix = path_of(parent["Ref"]) if "Ref" in parent else ""
            paths[logical_id] = f"{prefix}/{properties['PathPart']}"
        return paths[logical_id]

    for logical_id in resources:
        path_of(logical_id)
    return paths


def _methods(synth: Synth) -> dict[tuple[str, str], dict[str, object]]:
    paths = _paths(synth)
    methods = {}
    for method in synth.resources("AWS::ApiGateway::Method").values():
        properties = method["Properties"]
        resource = properties["ResourceId"]
        path = paths[resource["Ref"]] if "Ref" in resource else "/"
        methods[(path, properties["HttpMethod"])] = properties
    return methods


def _alias_of(synth: Synth, function: str) -> str:
    for logical_id, alias in synth.resources("AWS::Lambda::Alias").items():
        target = alias["Properties"]["FunctionName"]["Ref"]
        name = synth.template_json["Resources"][target]["Properties"]["FunctionName"]
        if name.endswith(f"-{function}"):
            return logical_id
    raise AssertionError(f"no alias for {function}")


def test_the_routes_are_the_local_gateways(prod: Synth, declaration: Declaration) -> None:
    expected = {
        (route.resource, method): route
        for route in RouteTable.from_declaration(declaration).routes()
        for method in route.methods
    }
    methods = _methods(prod)
    assert set(methods) == set(expected)
    for key, route in expected.items():
        properties = methods[key]
        assert properties["ApiKeyRequired"] is route.api_key_required, key
        # Proxy integration with the live alias of the function that serves the route.
        integration = properties["Integration"]
        assert integration["Type"] == "AWS_PROXY"
        alias = _alias_of(prod, route.function)
        assert {"Ref": alias} in integration["Uri"]["Fn::Join"][1], (key, route.function)


def test_only_health_goes_without_a_key(prod: Synth) -> None:
    open_routes = [key for key, method in _methods(prod).items() if not method["ApiKeyRequired"]]
    assert open_routes == [("/health", "GET")]
    prod.template.has_resource_properties(
        "AWS::ApiGateway::RestApi",
        {"ApiKeySourceType": "HEADER", "EndpointConfiguration": {"Types": ["REGIONAL"]}},
    )


def test_the_job_id_is_a_validated_parameter(prod: Synth) -> None:
    validators = prod.resources("AWS::ApiGateway::RequestValidator")
    (validator_id, validator), *_ = validators.items()
    assert validator["Properties"]["ValidateRequestParameters"] is True
    for (path, _), method in _methods(prod).items():
        if path.endswith("/{job_id}"):
            assert method["RequestParameters"] == {"method.request.path.job_id": True}
            assert method["RequestValidatorId"] == {"Ref": validator_id}


def test_the_stage_logs_traces_and_measures_but_never_bodies(prod: Synth) -> None:
    prod.template.has_resource_properties(
        "AWS::ApiGateway::Stage",
        {
            "StageName": "prod",
            "TracingEnabled": True,
            "AccessLogSetting": {
                "DestinationArn": Match.any_value(),
                "Format": json.dumps(ACCESS_LOG_FIELDS, separators=(",", ":")),
            },
            "MethodSettings": Match.array_with(
                [
                    Match.object_like(
                        {
                            "ResourcePath": "/*",
                            "HttpMethod": "*",
                            "MetricsEnabled": True,
                            "LoggingLevel": "ERROR",
                            "DataTraceEnabled": False,
                        }
                    )
                ]
            ),
        },
    )
    # The key's id is logged (which tenant), never the key itself.
    assert "$context.identity.apiKey" not in ACCESS_LOG_FIELDS.values()


def test_the_keyless_health_route_is_throttled_in_the_stage(
    prod: Synth, declaration: Declaration
) -> None:
    """No usage plan covers a keyless method: the stage's own limit for it answers a flood
    429, before it reaches the api function."""
    throttle = declaration.deploy.health_throttle
    (stage,) = prod.resources("AWS::ApiGateway::Stage").values()
    settings = {
        (setting["ResourcePath"], setting["HttpMethod"]): setting
        for setting in stage["Properties"]["MethodSettings"]
    }
    health = settings[("/~1health", "GET")]
    assert health["ThrottlingRateLimit"] == throttle.rate
    assert health["ThrottlingBurstLimit"] == throttle.burst
    assert health["DataTraceEnabled"] is False
