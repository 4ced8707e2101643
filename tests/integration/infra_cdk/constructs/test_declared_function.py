"""Each declared function: sized and built as declared, on a `live` alias that CodeDeploy
shifts (canary in prod) with rollback on alarms; cold starts handled as declared:
provisioned concurrency with scaling (embed), SnapStart (digits), never both."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aws_cdk.assertions import Match

from layers.recipes import LAMBDA_MODELS_DIR
from tests.conftest import ROOT

if TYPE_CHECKING:
    from stratoserve.declaration import Declaration
    from tests.integration.infra_cdk.conftest import Synth


def _functions(synth: Synth) -> dict[str, dict[str, Any]]:
    prefix = "stratoserve-" if synth.stage == "prod" else f"stratoserve-{synth.stage}-"
    return {
        function["Properties"]["FunctionName"].removeprefix(prefix): function["Properties"]
        for function in synth.resources("AWS::Lambda::Function").values()
        if function["Properties"].get("FunctionName", "").startswith(prefix)
    }


def _alias(synth: Synth, function: str) -> dict[str, Any]:
    for alias in synth.resources("AWS::Lambda::Alias").values():
        target = alias["Properties"]["FunctionName"]["Ref"]
        name = synth.template_json["Resources"][target]["Properties"]["FunctionName"]
        if name.endswith(f"-{function}"):
            properties: dict[str, Any] = alias["Properties"]
            return properties
    raise AssertionError(function)


def test_every_declared_function_is_sized_as_declared(
    prod: Synth, declaration: Declaration
) -> None:
    functions = _functions(prod)
    assert set(functions) == {"api", "digits", "embed", "worker"}
    for name, properties in functions.items():
        spec = declaration.functions[name]
        assert properties["MemorySize"] == spec.memory_mb
        assert properties["Timeout"] == spec.timeout_s
        assert properties["Architectures"] == [spec.architecture]
        assert properties["TracingConfig"] == {"Mode": "Active"}
        variables = properties["Environment"]["Variables"]
        assert variables["STRATOSERVE_FUNCTION"] == name
        assert variables["STRATOSERVE_MODELS_DIR"] == LAMBDA_MODELS_DIR
        assert variables["POWERTOOLS_SERVICE_NAME"] == "stratoserve"


def test_every_function_reserves_its_share_and_leaves_the_unreserved_pool(
    prod: Synth, dev: Synth, declaration: Declaration
) -> None:
    for synth in (prod, dev):
        functions = _functions(synth)
        reserved = {name: fn["ReservedConcurrentExecutions"] for name, fn in functions.items()}
        assert reserved == {
            name: declaration.functions[name].reserved_concurrency for name in functions
        }
        assert all(count >= 1 for count in reserved.values())
    # Both stages in one account of the declared size still leave AWS its 100 unreserved.
    assert 2 * sum(reserved.values()) <= declaration.project.account_concurrency - 100


def test_zip_functions_carry_their_layers_and_the_worker_is_an_image(prod: Synth) -> None:
    functions = _functions(prod)
    layers = {
        logical_id: layer["Properties"]["LayerName"]
        for logical_id, layer in prod.resources("AWS::Lambda::LayerVersion").items()
    }
    carried = {
        name: [layers[layer["Ref"]] for layer in properties.get("Layers", [])]
        for name, properties in functions.items()
    }
    # CDK lists a function's layers by logical id; their files never overlap (disjoint
    # closures, models under stratoserve-models/), so the order in /opt does not matter.
    assert carried["api"] == ["stratoserve-runtime-aarch64"]
    assert sorted(carried["digits"]) == [
        "stratoserve-models-digits-any",
        "stratoserve-onnx-aarch64",
        "stratoserve-runtime-aarch64",
    ]
    assert "stratoserve-models-embed-any" in carried["embed"]
    # Layers only a container image carries are not published as layers.
    assert not any("modal" in name or "models-worker" in name for name in layers.values())
    for name in ("api", "digits", "embed"):
        assert functions[name]["Runtime"] == "python3.12"
        assert functions[name]["Handler"] == "functions.api.handler.handler"
    worker = functions["worker"]
    assert worker["PackageType"] == "Image"
    assert carried["worker"] == []
    assert worker["ImageConfig"] == {"Command": ["functions.worker.handler.handler"]}


def test_the_worker_image_is_built_from_the_dockerfile_with_its_layers(prod: Synth) -> None:
    assets = json.loads((prod.outdir / "stratoserve.assets.json").read_text())["dockerImages"]
    (image,) = assets.values()
    context = prod.outdir / image["source"]["directory"]
    assert (context / "Dockerfile").read_text() == (ROOT / "functions" / "Dockerfile").read_text()
    zips = sorted(path.name for path in (context / "layers").iterdir())
    assert zips == ["01-runtime.zip", "02-onnx.zip", "03-modal.zip", "04-models-worker.zip"]
    assert (context / "code.zip").is_file()
    assert image["source"].get("platform") == "linux/arm64"


def test_cold_starts_are_handled_as_declared(prod: Synth, declaration: Declaration) -> None:
    functions = _functions(prod)
    assert functions["digits"]["SnapStart"] == {"ApplyOn": "PublishedVersions"}
    assert "SnapStart" not in functions["embed"]
    embed = declaration.functions["embed"]
    assert _alias(prod, "embed")["ProvisionedConcurrencyConfig"] == {
        "ProvisionedConcurrentExecutions": embed.provisioned_concurrency
    }
    assert "ProvisionedConcurrencyConfig" not in _alias(prod, "digits")
    for name in functions:  # never both on one function
        snap = "SnapStart" in functions[name]
        assert not (snap and "ProvisionedConcurrencyConfig" in _alias(prod, name)), name
    assert embed.scaling is not None
    prod.template.has_resource_properties(
        "AWS::ApplicationAutoScaling::ScalableTarget",
        {
            "ScalableDimension": "lambda:function:ProvisionedConcurrency",
            "MinCapacity": embed.provisioned_concurrency,
            "MaxCapacity": embed.scaling.max,
            "ScheduledActions": [
                Match.object_like(
                    {
                        "Schedule": scheduled.schedule,
                        "ScalableTargetAction": {
                            "MinCapacity": scheduled.min,
                            "MaxCapacity": scheduled.max,
                        },
                    }
                )
                for scheduled in embed.scaling.schedules
            ],
        },
    )
    prod.template.has_resource_properties(
        "AWS::ApplicationAutoScaling::ScalingPolicy",
        {
            "PolicyType": "TargetTrackingScaling",
            "TargetTrackingScalingPolicyConfiguration": Match.object_like(
                {"TargetValue": embed.scaling.utilization}
            ),
        },
    )


def test_every_alias_rolls_out_by_canary_and_back_on_its_alarm(prod: Synth) -> None:
    groups = prod.resources("AWS::CodeDeploy::DeploymentGroup")
    assert len(groups) == 4
    for group in groups.values():
        properties = group["Properties"]
        assert properties["DeploymentConfigName"] == (
            "CodeDeployDefault.LambdaCanary10Percent5Minutes"
        )
        assert set(properties["AutoRollbackConfiguration"]["Events"]) == {
            "DEPLOYMENT_FAILURE",
            "DEPLOYMENT_STOP_ON_REQUEST",
            "DEPLOYMENT_STOP_ON_ALARM",
        }
        (alarm,) = properties["AlarmConfiguration"]["Alarms"]
        alarm_properties = prod.template_json["Resources"][alarm["Name"]["Ref"]]["Properties"]
        assert alarm_properties["Threshold"] == 0.01
        assert "errors / invocations" in str(alarm_properties["Metrics"])
    for alias in prod.resources("AWS::Lambda::Alias").values():
        assert alias["Properties"]["Name"] == "live"


def test_the_aliases_are_what_codedeploy_shifts(prod: Synth) -> None:
    for alias in prod.resources("AWS::Lambda::Alias").values():
        policy = alias["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"]
        assert set(policy) == {"ApplicationName", "DeploymentGroupName"}
