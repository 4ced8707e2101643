"""The stack's wiring: each function gets what its code calls and nothing more; the two
stages differ only where the stage says; the operator gets the outputs the CLI needs."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aws_cdk.assertions import Match

if TYPE_CHECKING:
    from tests.integration.infra_cdk.conftest import Synth


def _actions_by_function(synth: Synth) -> dict[str, set[str]]:
    roles = {
        function["Properties"]["Role"]["Fn::GetAtt"][0]: function["Properties"]["FunctionName"]
        for function in synth.resources("AWS::Lambda::Function").values()
        if "FunctionName" in function["Properties"]
    }
    actions: dict[str, set[str]] = {}
    for policy in synth.resources("AWS::IAM::Policy").values():
        for role in policy["Properties"]["Roles"]:
            name = roles.get(role["Ref"])
            if name is None:
                continue
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                listed = statement["Action"]
                actions.setdefault(name, set()).update(
                    [listed] if isinstance(listed, str) else listed
                )
    return actions


def test_least_privilege(prod: Synth) -> None:
    actions = _actions_by_function(prod)
    for name, allowed in actions.items():
        assert not any(action.endswith(":*") for action in allowed), (name, allowed)
        assert "s3:DeleteObject" not in allowed
    worker = actions["stratoserve-worker"]
    assert {"s3:GetObject", "s3:PutObject", "s3:ListBucket", "sqs:ReceiveMessage"} <= worker
    assert "secretsmanager:GetSecretValue" in worker  # the Modal token, the signing key
    for name in ("stratoserve-api", "stratoserve-digits", "stratoserve-embed"):
        assert "sqs:SendMessage" in actions[name]  # big requests become jobs
        # Never: reading the queue, listing the bucket, reading a secret.
        assert (
            not {"s3:ListBucket", "sqs:ReceiveMessage", "secretsmanager:GetSecretValue"}
            & (actions[name])
        ), name
    # Only the warmed function (api, concurrency 2) may invoke a function: its own alias.
    assert [name for name, allowed in actions.items() if "lambda:InvokeFunction" in allowed] == [
        "stratoserve-api"
    ]


HTTP_FUNCTIONS = ("stratoserve-api", "stratoserve-digits", "stratoserve-embed")


def test_no_function_may_read_api_keys(prod: Synth) -> None:
    """The tenant comes from the registry: no role may GET an API key (and so its value)."""
    policies = json.dumps(prod.resources("AWS::IAM::Policy"))
    assert "apigateway:" not in policies
    assert "/apikeys" not in policies


def test_each_function_gets_only_the_table_and_queue_actions_its_code_calls(prod: Synth) -> None:
    actions = _actions_by_function(prod)

    def of(name: str, service: str) -> set[str]:
        return {action for action in actions[name] if action.startswith(service + ":")}

    for name in HTTP_FUNCTIONS:
        # Create (a conditional put), read, update: never list, scan, delete or batch.
        assert of(name, "dynamodb") == {
            "dynamodb:GetItem",
            "dynamodb:PutItem",
            "dynamodb:UpdateItem",
        }
        assert of(name, "sqs") == {"sqs:SendMessage"}
    worker = "stratoserve-worker"
    # The worker only moves existing records forward: no PutItem, no DeleteItem; it scans
    # the table for the stuck-jobs sweep.
    assert of(worker, "dynamodb") == {"dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:Scan"}
    # SendMessage and ChangeMessageVisibility its code calls; the rest is the event source's.
    assert of(worker, "sqs") == {
        "sqs:SendMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:GetQueueUrl",
    }


def _tenants_table(synth: Synth) -> str:
    (logical_id,) = [
        logical_id
        for logical_id, table in synth.resources("AWS::DynamoDB::GlobalTable").items()
        if table["Properties"]["KeySchema"] == [{"AttributeName": "key_id", "KeyType": "HASH"}]
    ]
    return logical_id


def test_the_http_functions_may_only_get_one_registry_item(prod: Synth) -> None:
    registry = _tenants_table(prod)
    prod.template.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        {
                            "Action": "dynamodb:GetItem",
                            "Effect": "Allow",
                            "Resource": {"Fn::GetAtt": [registry, "Arn"]},
                        }
                    ]
                )
            }
        },
    )
    on_registry = [
        (statement["Action"], policy["Properties"]["Roles"])
        for policy in prod.resources("AWS::IAM::Policy").values()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if registry in json.dumps(statement["Resource"])
    ]
    assert len(on_registry) == len(HTTP_FUNCTIONS)
    assert {action for action, _ in on_registry} == {"dynamodb:GetItem"}
    for function in prod.resources("AWS::Lambda::Function").values():
        variables = function["Properties"].get("Environment", {}).get("Variables", {})
        if function["Properties"].get("FunctionName") in HTTP_FUNCTIONS:
            assert variables["STRATOSERVE_TENANTS_TABLE"] == {"Ref": registry}
        else:
            assert "STRATOSERVE_TENANTS_TABLE" not in variables


def test_the_modal_token_reaches_the_worker_only(prod: Synth) -> None:
    secrets = {
        secret["Properties"]["Description"].split(": ")[1].split(" ")[1]: secret
        for secret in prod.resources("AWS::SecretsManager::Secret").values()
    }
    assert set(secrets) == {"Modal", "key"}
    # Named by CloudFormation: a deploy after a delete never meets a kept secret's name.
    assert all("Name" not in secret["Properties"] for secret in secrets.values())
    modal = secrets["Modal"]["Properties"]
    # No token in the template: an empty id (refused by the runtime until it is put there).
    assert modal["GenerateSecretString"]["SecretStringTemplate"] == '{"token_id": ""}'
    for function in prod.resources("AWS::Lambda::Function").values():
        variables = function["Properties"].get("Environment", {}).get("Variables", {})
        if function["Properties"].get("FunctionName") == "stratoserve-worker":
            assert "STRATOSERVE_MODAL_SECRET_ARN" in variables
        else:
            assert "STRATOSERVE_MODAL_SECRET_ARN" not in variables


def _deletion_policies(synth: Synth, kind: str) -> set[str]:
    return {resource.get("DeletionPolicy", "Delete") for resource in synth.resources(kind).values()}


def test_dev_differs_from_prod_only_where_the_stage_says(prod: Synth, dev: Synth) -> None:
    def kinds(synth: Synth) -> dict[str, int]:
        counted: dict[str, int] = {}
        for resource in synth.template_json["Resources"].values():
            counted[resource["Type"]] = counted.get(resource["Type"], 0) + 1
        counted.pop("AWS::CDK::Metadata", None)  # the CDK CLI's version reporting
        return counted

    prod_kinds, dev_kinds = kinds(prod), kinds(dev)
    # Dev keeps no provisioned concurrency (so nothing to scale), and its bucket empties
    # itself when the stack is deleted (a custom resource and its provider function).
    for kind in (
        "AWS::ApplicationAutoScaling::ScalableTarget",
        "AWS::ApplicationAutoScaling::ScalingPolicy",
    ):
        assert prod_kinds.pop(kind) == 1
        assert kind not in dev_kinds
    assert dev_kinds.pop("Custom::S3AutoDeleteObjects") == 1
    assert dev_kinds.pop("AWS::Lambda::Function") == prod_kinds.pop("AWS::Lambda::Function") + 1
    assert dev_kinds.pop("AWS::IAM::Role") == prod_kinds.pop("AWS::IAM::Role") + 1
    assert dev_kinds == prod_kinds
    for alias in dev.resources("AWS::Lambda::Alias").values():
        assert "ProvisionedConcurrencyConfig" not in alias["Properties"]
    for group in dev.resources("AWS::CodeDeploy::DeploymentGroup").values():
        assert group["Properties"]["DeploymentConfigName"] == "CodeDeployDefault.LambdaAllAtOnce"
    assert _deletion_policies(prod, "AWS::DynamoDB::GlobalTable") == {"Retain"}
    assert _deletion_policies(dev, "AWS::DynamoDB::GlobalTable") == {"Delete"}
    assert _deletion_policies(dev, "AWS::S3::Bucket") == {"Delete"}
    retention = {
        synth.stage: {
            group["Properties"].get("RetentionInDays")
            for group in synth.resources("AWS::Logs::LogGroup").values()
        }
        for synth in (prod, dev)
    }
    assert retention == {"prod": {30}, "dev": {7}}


def test_outputs_for_the_operator_and_the_cli(prod: Synth) -> None:
    outputs: dict[str, Any] = prod.template_json["Outputs"]
    for name in (
        "ApiUrl",
        "UsagePlanPrefix",
        "FreeUsagePlanId",
        "ProUsagePlanId",
        "JobsQueueUrl",
        "JobsDeadLetterQueueUrl",
        "JobsTableName",
        "JobsBucketName",
        "TenantsTableName",
        "ModalTokenSecretArn",
        "AlarmTopicArn",
        "CallbackSigningSecretArn",
    ):
        assert name in outputs, name
    assert outputs["UsagePlanPrefix"]["Value"] == "stratoserve-"
