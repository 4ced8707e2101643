"""One function of the declaration: the Lambda function (zip with layers, or a container
image), its `live` alias, how its cold starts are kept off the request path (provisioned
concurrency with Application Auto Scaling, or SnapStart), and the CodeDeploy deployment
group that shifts the alias to each new version and rolls back on an alarm."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aws_cdk import AssetHashType, CfnResource, Duration, RemovalPolicy, Stack
from aws_cdk import aws_applicationautoscaling as autoscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_codedeploy as codedeploy
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

if TYPE_CHECKING:
    from stratoserve.declaration import FunctionSpec

ALIAS = "live"
ARCHITECTURES = {"arm64": lambda_.Architecture.ARM_64, "x86_64": lambda_.Architecture.X86_64}
_config = codedeploy.LambdaDeploymentConfig
DEPLOYMENT_CONFIGS = {
    "LambdaAllAtOnce": _config.ALL_AT_ONCE,
    "LambdaCanary10Percent5Minutes": _config.CANARY_10_PERCENT_5_MINUTES,
    "LambdaCanary10Percent10Minutes": _config.CANARY_10_PERCENT_10_MINUTES,
    "LambdaCanary10Percent15Minutes": _config.CANARY_10_PERCENT_15_MINUTES,
    "LambdaCanary10Percent30Minutes": _config.CANARY_10_PERCENT_30_MINUTES,
    "LambdaLinear10PercentEvery1Minute": _config.LINEAR_10_PERCENT_EVERY_1_MINUTE,
    "LambdaLinear10PercentEvery2Minutes": _config.LINEAR_10_PERCENT_EVERY_2_MINUTES,
    "LambdaLinear10PercentEvery3Minutes": _config.LINEAR_10_PERCENT_EVERY_3_MINUTES,
    "LambdaLinear10PercentEvery10Minutes": _config.LINEAR_10_PERCENT_EVERY_10_MINUTES,
}
"""[deploy].deployment (CodeDeploy's names, stratoserve/declaration/schema.py) -> CDK's."""
PLATFORMS = {
    "arm64": ecr_assets.Platform.LINUX_ARM64,
    "x86_64": ecr_assets.Platform.LINUX_AMD64,
}


@dataclass(frozen=True)
class Package:
    """What the function deploys: a zip (code + layers) or an image's build context."""

    kind: str
    code_zip: str
    code_sha256: str
    layers: list[lambda_.ILayerVersion]
    image_context: str | None = None


@dataclass(frozen=True)
class Rollout:
    deployment: str
    """A CodeDeploy predefined config name without its prefix (LambdaCanary10Percent5Minutes)."""
    error_rate: float
    provisioned: bool
    """False: provisioned concurrency is left out (the dev stage)."""
    log_retention: logs.RetentionDays
    removal_policy: RemovalPolicy


class DeclaredFunction(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        name: str,
        function_name: str,
        spec: FunctionSpec,
        handler: str,
        package: Package,
        environment: dict[str, str],
        rollout: Rollout,
    ) -> None:
        super().__init__(scope, construct_id)
        self.name = name
        self.package = package.kind
        # Named by CloudFormation (not /aws/lambda/<name>): one kept by prod after a delete
        # never blocks the next deploy; the function logs to it (LoggingConfig).
        self.log_group = logs.LogGroup(
            self,
            "LogGroup",
            retention=rollout.log_retention,
            removal_policy=rollout.removal_policy,
        )
        common = {
            "function_name": function_name,
            "description": f"stratoserve function {name}",
            "architecture": ARCHITECTURES[spec.architecture],
            "memory_size": spec.memory_mb,
            "timeout": Duration.seconds(spec.timeout_s),
            "environment": environment,
            "tracing": lambda_.Tracing.ACTIVE,
            "log_group": self.log_group,
            "reserved_concurrent_executions": spec.reserved_concurrency,
        }
        if package.kind == "image":
            assert package.image_context is not None
            self.function: lambda_.Function = lambda_.DockerImageFunction(
                self,
                "Function",
                code=lambda_.DockerImageCode.from_image_asset(
                    package.image_context,
                    cmd=[handler],
                    platform=PLATFORMS[spec.architecture],
                ),
                **common,  # type: ignore[arg-type]
            )
        else:
            self.function = lambda_.Function(
                self,
                "Function",
                runtime=lambda_.Runtime.PYTHON_3_12,
                handler=handler,
                code=lambda_.Code.from_asset(
                    package.code_zip,
                    asset_hash=package.code_sha256,
                    asset_hash_type=AssetHashType.CUSTOM,
                ),
                layers=package.layers,
                snap_start=(
                    lambda_.SnapStartConf.ON_PUBLISHED_VERSIONS if spec.snapstart else None
                ),
                **common,  # type: ignore[arg-type]
            )
        self._depend_on_policy_only()
        provisioned = spec.provisioned_concurrency if rollout.provisioned else None
        self.alias = lambda_.Alias(
            self,
            "Alias",
            alias_name=ALIAS,
            version=self.function.current_version,
            provisioned_concurrent_executions=provisioned,
        )
        if provisioned and spec.scaling is not None:
            self._scale(spec, provisioned)
        self.errors_alarm = self._error_rate_alarm(rollout.error_rate)
        self.deployment_group = codedeploy.LambdaDeploymentGroup(
            self,
            "DeploymentGroup",
            alias=self.alias,
            deployment_config=DEPLOYMENT_CONFIGS[rollout.deployment],
            alarms=[self.errors_alarm],
            auto_rollback=codedeploy.AutoRollbackConfig(
                failed_deployment=True, stopped_deployment=True, deployment_in_alarm=True
            ),
        )

    def _depend_on_policy_only(self) -> None:
        """CDK makes the function depend on its role and the role's policy; the role is a
        reference already (Role: GetAtt), and the redundant DependsOn is a cfn-lint
        warning (W3005) that fails `sam validate --lint`, which cannot be told to ignore it.
        The policy stays: without it the function could start before it may do anything."""
        resource = self.function.node.default_child
        role = self.function.role
        policy = role.node.try_find_child("DefaultPolicy") if role is not None else None
        if isinstance(resource, CfnResource) and policy is not None:
            policy_resource = policy.node.default_child
            assert isinstance(policy_resource, CfnResource)
            resource.add_override("DependsOn", [Stack.of(self).get_logical_id(policy_resource)])

    def _scale(self, spec: FunctionSpec, provisioned: int) -> None:
        assert spec.scaling is not None
        target = self.alias.add_auto_scaling(
            min_capacity=provisioned, max_capacity=spec.scaling.max
        )
        target.scale_on_utilization(utilization_target=spec.scaling.utilization)
        for index, scheduled in enumerate(spec.scaling.schedules):
            target.scale_on_schedule(
                f"Schedule{index}",
                schedule=autoscaling.Schedule.expression(scheduled.schedule),
                min_capacity=scheduled.min,
                max_capacity=scheduled.max,
            )

    def _error_rate_alarm(self, error_rate: float) -> cloudwatch.Alarm:
        """Errors per invocation on the alias: CodeDeploy watches it during a rollout."""
        period = Duration.minutes(1)
        rate = cloudwatch.MathExpression(
            expression="IF(invocations > 0, errors / invocations, 0)",
            using_metrics={
                "errors": self.alias.metric_errors(period=period, statistic="Sum"),
                "invocations": self.alias.metric_invocations(period=period, statistic="Sum"),
            },
            period=period,
            label=f"{self.name} error rate",
        )
        return rate.create_alarm(
            self,
            "ErrorRateAlarm",
            alarm_description=f"stratoserve {self.name}: more than {error_rate:.1%} of "
            "invocations of the live alias failed",
            threshold=error_rate,
            evaluation_periods=3,
            datapoints_to_alarm=2,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
