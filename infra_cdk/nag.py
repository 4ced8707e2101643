"""The cdk-nag AwsSolutions findings this design accepts, each with the reason. Anything
not acknowledged here fails the synth (and the tests)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import Acknowledgment, CfnResource, Stack, Validations

if TYPE_CHECKING:
    from constructs import IConstruct

    from infra_cdk.stacks.service_stack import ServiceStack

MANAGED = "arn:<AWS::Partition>:iam::aws:policy/service-role/"

API_KEYS_ARE_THE_AUTH = (
    "Tenants authenticate with API Gateway API keys bound to usage plans (quotas and "
    "throttles per tenant): that is the product's access model, the same locally and on "
    "AWS. A Cognito or IAM authorizer can be added in front for user-level identity."
)

REASONS: dict[str, str] = {
    "AwsSolutions-APIG2": (
        "The validator checks declared parameters only. Bodies are validated by the "
        "functions, which answer 422 naming the field (the HTTP contract, and what the "
        "local stack answers); API Gateway's body validation would answer 400 'Invalid "
        "request body' instead."
    ),
    "AwsSolutions-APIG3": (
        "WAF is the account's perimeter policy, priced per rule; usage plans already "
        "throttle and cap every key. docs/DEPLOY.md shows how to attach a web ACL."
    ),
    "AwsSolutions-APIG4": API_KEYS_ARE_THE_AUTH,
    "AwsSolutions-COG4": API_KEYS_ARE_THE_AUTH,
    "AwsSolutions-L1": (
        "The layers are built and byte-compiled for Python 3.12 (layers/builder.py "
        "TARGET_PYTHON); a newer runtime needs layers compiled for it."
    ),
    "AwsSolutions-S1": (
        "Objects are one job's inputs or result, expire with the job, and are read through "
        "short-lived presigned URLs; CloudTrail data events are the audit trail where an "
        "account wants one."
    ),
    "AwsSolutions-SMG4": (
        "Not rotatable by Lambda: the Modal token is issued by Modal, and tenants' callback "
        "secrets derive from the signing key (rotating it breaks their verification)."
    ),
    "AwsSolutions-IAM5[Resource::*]": (
        "X-Ray's PutTraceSegments and PutTelemetryRecords take no resource."
    ),
    "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:apigateway:<AWS::Region>::/apikeys/*]": (
        "A function reads the key of each caller (its tenant and plan tags); keys are "
        "issued after deploy, one per tenant, so they cannot be named here. GET only."
    ),
    f"AwsSolutions-IAM4[Policy::{MANAGED}AWSLambdaBasicExecutionRole]": (
        "AWS's minimal policy for writing the function's own logs."
    ),
    f"AwsSolutions-IAM4[Policy::{MANAGED}AWSCodeDeployRoleForLambdaLimited]": (
        "CodeDeploy's own limited policy for shifting an alias between versions."
    ),
    f"AwsSolutions-IAM4[Policy::{MANAGED}AmazonAPIGatewayPushToCloudWatchLogs]": (
        "API Gateway's account-level role for writing execution and access logs."
    ),
}


def acknowledge_findings(stack: ServiceStack) -> None:
    for finding, reason in REASONS.items():
        Validations.of(stack).acknowledge(Acknowledgment(id=finding, reason=reason))
    bucket = _logical_id(stack, stack.job_store.bucket)
    objects = {
        "inputs/*": "one object per job, named by tenant and job id, under inputs/",
        "results/*": "one object per job, named by tenant and job id, under results/",
    }
    for pattern, what in objects.items():
        Validations.of(stack).acknowledge(
            Acknowledgment(
                id=f"AwsSolutions-IAM5[Resource::<{bucket}.Arn>/{pattern}]",
                reason=f"The functions read or write {what}; the job ids are made at run time.",
            )
        )


def _logical_id(stack: Stack, construct: IConstruct) -> str:
    resource = construct.node.default_child
    assert isinstance(resource, CfnResource)
    logical_id: str = stack.resolve(stack.get_logical_id(resource))
    return logical_id
