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
        "secrets derive from the signing key, so rotating it would change every tenant's "
        "secret at once; a tenant's own secret rotates by version (`stratoserve keys "
        "rotate-secret`), with the signing key unchanged."
    ),
    "AwsSolutions-IAM5[Resource::*]": (
        "X-Ray's PutTraceSegments and PutTelemetryRecords take no resource."
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


API_FINDINGS = (
    "AwsSolutions-APIG2",
    "AwsSolutions-APIG3",
    "AwsSolutions-APIG4",
    "AwsSolutions-COG4",
)
API_ROLE = f"AwsSolutions-IAM4[Policy::{MANAGED}AmazonAPIGatewayPushToCloudWatchLogs]"
FUNCTION_FINDINGS = (
    f"AwsSolutions-IAM4[Policy::{MANAGED}AWSLambdaBasicExecutionRole]",
    f"AwsSolutions-IAM4[Policy::{MANAGED}AWSCodeDeployRoleForLambdaLimited]",
    "AwsSolutions-IAM5[Resource::*]",
)
AUTO_DELETE_PROVIDER = "Custom::S3AutoDeleteObjectsCustomResourceProvider"
"""The dev stage's bucket empties itself on delete through CDK's own provider function."""


def acknowledge_findings(stack: ServiceStack) -> None:
    """Each acknowledgement on the construct it is about: a new wildcard or a new resource
    elsewhere in the stack is still a finding."""
    api = stack.api.api
    _acknowledge(api, *API_FINDINGS, API_ROLE)
    bucket = _logical_id(stack, stack.job_store.bucket)
    objects = {
        "inputs/*": "one object per job, named by tenant id and job id, under inputs/",
        "results/*": "one object per job, named by tenant id and job id, under results/",
    }
    for function in stack.functions.values():
        findings = list(FUNCTION_FINDINGS)
        if function.package == "zip":  # cdk-nag's L1 does not look at images
            findings.append("AwsSolutions-L1")
        _acknowledge(function, *findings)
        for pattern, what in objects.items():
            Validations.of(function).acknowledge(
                Acknowledgment(
                    id=f"AwsSolutions-IAM5[Resource::<{bucket}.Arn>/{pattern}]",
                    reason=f"The function reads or writes {what}; job ids are made at run time.",
                )
            )
    _acknowledge(stack.job_store.bucket, "AwsSolutions-S1")
    for secret in stack.secrets:
        _acknowledge(secret, "AwsSolutions-SMG4")
    provider = stack.node.try_find_child(AUTO_DELETE_PROVIDER)
    if provider is not None:
        Validations.of(provider).acknowledge(
            *(
                Acknowledgment(id=finding, reason=reason)
                for finding, reason in AUTO_DELETE_REASONS.items()
            )
        )


AUTO_DELETE_REASONS = {
    f"AwsSolutions-IAM4[Policy::{MANAGED}AWSLambdaBasicExecutionRole]": (
        "CDK's own provider that empties the dev stage's bucket on delete: its logs only."
    ),
    "AwsSolutions-L1": "CDK's own provider (Node.js) that empties the dev bucket on delete.",
}


def _acknowledge(construct: IConstruct, *findings: str) -> None:
    Validations.of(construct).acknowledge(
        *(Acknowledgment(id=finding, reason=REASONS[finding]) for finding in findings)
    )


def _logical_id(stack: Stack, construct: IConstruct) -> str:
    resource = construct.node.default_child
    assert isinstance(resource, CfnResource)
    logical_id: str = stack.resolve(stack.get_logical_id(resource))
    return logical_id
