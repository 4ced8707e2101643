"""The tenant registry: API key id -> tenant, named so `stratoserve keys --target aws` finds
it, kept (and protected) in prod, with point-in-time recovery."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk.assertions import Match

if TYPE_CHECKING:
    from tests.integration.infra_cdk.conftest import Synth


def test_the_registry_table(prod: Synth, dev: Synth) -> None:
    prod.template.has_resource(
        "AWS::DynamoDB::GlobalTable",
        {
            "Properties": Match.object_like(
                {
                    "TableName": "stratoserve-tenants",
                    "KeySchema": [{"AttributeName": "key_id", "KeyType": "HASH"}],
                    "BillingMode": "PAY_PER_REQUEST",
                    "Replicas": [
                        Match.object_like(
                            {
                                "PointInTimeRecoverySpecification": {
                                    "PointInTimeRecoveryEnabled": True
                                },
                                "DeletionProtectionEnabled": True,
                            }
                        )
                    ],
                }
            ),
            "DeletionPolicy": "Retain",
        },
    )
    dev.template.has_resource_properties(
        "AWS::DynamoDB::GlobalTable", {"TableName": "stratoserve-dev-tenants"}
    )
