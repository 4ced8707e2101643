"""The tenant registry: one item per API key (its id -> tenant name, immutable tenant id,
plan, callback secret version), written by `stratoserve keys` (stratoserve/tenants.py) and
read by the HTTP functions with one GetItem per caller (functions/runtime/tenants.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from constructs import Construct

from functions.runtime.tenants import KEY_ID
from stratoserve.tenants import table_name

if TYPE_CHECKING:
    from aws_cdk import aws_lambda as lambda_


class Tenants(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, name: str, retain: bool) -> None:
        """`name`: the deployed prefix; the table is named after it, because
        `stratoserve keys --target aws` finds it by name (as it finds the usage plans)."""
        super().__init__(scope, construct_id)
        self.table = dynamodb.TableV2(
            self,
            "Table",
            table_name=table_name(name),
            partition_key=dynamodb.Attribute(name=KEY_ID, type=dynamodb.AttributeType.STRING),
            billing=dynamodb.Billing.on_demand(),
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            deletion_protection=retain,
            removal_policy=RemovalPolicy.RETAIN if retain else RemovalPolicy.DESTROY,
        )

    def grant_lookup(self, function: lambda_.IFunction) -> None:
        """Who owns a key: one item by its id. No Scan or Query (the registry is not listed
        from a function), no writes."""
        function.add_to_role_policy(
            iam.PolicyStatement(actions=["dynamodb:GetItem"], resources=[self.table.table_arn])
        )
