"""The job store: the DynamoDB table of job records and idempotency keys (tenant + job id,
TTL) and the S3 bucket of large inputs and results (functions/runtime/job_store.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

if TYPE_CHECKING:
    from aws_cdk import aws_lambda as lambda_

EXPIRING_PREFIXES = ("inputs", "results")


class JobStore(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        ttl_days: int,
        retain: bool,
    ) -> None:
        super().__init__(scope, construct_id)
        removal = RemovalPolicy.RETAIN if retain else RemovalPolicy.DESTROY
        self.table = dynamodb.TableV2(
            self,
            "Table",
            partition_key=dynamodb.Attribute(name="tenant", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="job_id", type=dynamodb.AttributeType.STRING),
            billing=dynamodb.Billing.on_demand(),
            time_to_live_attribute="expires_at",
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            deletion_protection=retain,
            removal_policy=removal,
        )
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,
            # Inputs and results expire with their jobs (the table's TTL).
            lifecycle_rules=[
                s3.LifecycleRule(
                    id=f"expire-{prefix}",
                    prefix=f"{prefix}/",
                    expiration=Duration.days(ttl_days),
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                )
                for prefix in EXPIRING_PREFIXES
            ],
            removal_policy=removal,
            auto_delete_objects=not retain,
        )

    def grant_submit(self, function: lambda_.IFunction) -> None:
        """What accepting jobs and answering them takes (the api and model functions), as
        functions/runtime/job_store.py calls it: a record created (a conditional put), read,
        updated (message id, cancel, a failed send, an abandoned run settled); big inputs
        in, results out (presigned URLs are signed by the role). No Query, Scan or Delete."""
        self._allow_records(
            function, ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"]
        )
        self._allow(function, ["s3:PutObject"], "inputs/*")
        self._allow(function, ["s3:GetObject"], "results/*")

    def grant_work(self, function: lambda_.IFunction) -> None:
        """What running jobs takes (the worker): records read and updated (claims, results,
        failures, GPU dispatch), never created, listed or deleted; inputs in, results out;
        the bucket listed so that a missing object answers 404, not 403."""
        self._allow_records(function, ["dynamodb:GetItem", "dynamodb:UpdateItem"])
        self._allow(function, ["s3:GetObject"], "inputs/*")
        self._allow(function, ["s3:GetObject", "s3:PutObject"], "results/*")
        function.add_to_role_policy(
            iam.PolicyStatement(actions=["s3:ListBucket"], resources=[self.bucket.bucket_arn])
        )

    def grant_sweep(self, function: lambda_.IFunction) -> None:
        """What the stuck-jobs sweep takes (the worker, on its schedule): the unfinished
        jobs scanned (JobStore.sweep); settling them is grant_work's UpdateItem."""
        self._allow_records(function, ["dynamodb:Scan"])

    def _allow_records(self, function: lambda_.IFunction, actions: list[str]) -> None:
        function.add_to_role_policy(
            iam.PolicyStatement(actions=actions, resources=[self.table.table_arn])
        )

    def _allow(self, function: lambda_.IFunction, actions: list[str], pattern: str) -> None:
        function.add_to_role_policy(
            iam.PolicyStatement(actions=actions, resources=[self.bucket.arn_for_objects(pattern)])
        )
