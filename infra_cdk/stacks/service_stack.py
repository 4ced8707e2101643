"""The whole service in one stack: what `stratoserve dev` runs locally, on AWS. It wires
the constructs and grants each function what its code calls, nothing more."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, get_args

from aws_cdk import CfnOutput, Duration, RemovalPolicy, Stack
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_logs as logs

from infra_cdk.constructs import pascal_case
from infra_cdk.constructs.callback_queue import CallbackQueue
from infra_cdk.constructs.declared_function import DeclaredFunction, Package, Rollout
from infra_cdk.constructs.function_layers import FunctionLayers
from infra_cdk.constructs.job_queue import JobQueue
from infra_cdk.constructs.job_store import JobStore
from infra_cdk.constructs.job_sweep import JobSweep
from infra_cdk.constructs.observability import Observability, PredictRoute, Thresholds
from infra_cdk.constructs.rest_api import RestApi
from infra_cdk.constructs.secrets import CallbackSigningSecret, ModalTokenSecret
from infra_cdk.constructs.tenants import Tenants
from infra_cdk.constructs.usage_plans import UsagePlans
from infra_cdk.constructs.warm_up import WarmUp
from layers.recipes import ARCHITECTURES, LAMBDA_MODELS_DIR
from stratoserve.declaration.routes import RouteTable
from stratoserve.declaration.schema import (
    DEFAULT_WORKER,
    HTTP_HANDLER,
    WORKER_FUNCTION,
    WORKER_HANDLER,
    LogRetentionDays,
)

if TYPE_CHECKING:
    from constructs import Construct

    from infra_cdk.stage import Stage
    from layers.builder import BuildReport
    from stratoserve.declaration import Declaration

RETENTION = dict(
    zip(
        get_args(LogRetentionDays),
        [days for days in logs.RetentionDays if days is not logs.RetentionDays.INFINITE],
        strict=True,
    )
)
"""CloudWatch Logs' retention periods, in days, -> CDK's names (ONE_MONTH for 30)."""
DECLARATION_IN_CODE = "/var/task/stratoserve.toml"
"""Where the code zip (and the image) puts the declaration."""


class ServiceStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        declaration: Declaration,
        build: BuildReport,
        stage: Stage,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        project = declaration.project.name
        prefix = stage.prefix(project)
        removal = RemovalPolicy.RETAIN if stage.retain_data else RemovalPolicy.DESTROY
        retention = RETENTION[stage.log_retention_days or declaration.deploy.log_retention_days]

        jobs = JobQueue(
            self,
            "JobQueue",
            name=prefix,
            visibility_timeout_s=declaration.visibility_timeout_s(),
            max_receive_count=declaration.jobs.max_receive_count,
            ttl_days=declaration.jobs.ttl_days,
            # Messages are in flight, not records (the table is): a queue kept after a
            # delete would only block the next deploy of its fixed name.
            removal_policy=RemovalPolicy.DESTROY,
        )
        callbacks = CallbackQueue(
            self,
            "CallbackQueue",
            name=prefix,
            visibility_timeout_s=declaration.visibility_timeout_s(),
            attempts=declaration.jobs.callback_attempts,
            ttl_days=declaration.jobs.ttl_days,
        )
        store = JobStore(
            self, "JobStore", ttl_days=declaration.jobs.ttl_days, retain=stage.retain_data
        )
        tenants = Tenants(self, "Tenants", name=prefix, retain=stage.retain_data)
        signing = CallbackSigningSecret(
            self, "CallbackSigningSecret", name=prefix, removal_policy=removal
        )
        modal = (
            ModalTokenSecret(self, "ModalTokenSecret", name=prefix, app=declaration.gpu.app)
            if declaration.gpu is not None
            else None
        )
        # Only what a zip function carries: an image unpacks its layers itself.
        carried = {
            zip_path
            for report in build.functions
            if report.package == "zip"
            for zip_path in report.layer_zips
        }
        layers = FunctionLayers(
            self,
            "Layers",
            builds=[layer for layer in build.layers if layer.zip in carried],
            project=prefix,
        )

        rollout = Rollout(
            deployment=(
                declaration.deploy.deployment if stage.gradual_deployment else "LambdaAllAtOnce"
            ),
            error_rate=declaration.deploy.error_rate,
            provisioned=stage.provisioned_concurrency,
            log_retention=retention,
            removal_policy=removal,
        )
        shared_environment = {
            "STRATOSERVE_CONFIG": DECLARATION_IN_CODE,
            "STRATOSERVE_MODELS_DIR": LAMBDA_MODELS_DIR,
            "STRATOSERVE_JOBS_TABLE": store.table.table_name,
            "STRATOSERVE_JOBS_BUCKET": store.bucket.bucket_name,
            "STRATOSERVE_JOBS_QUEUE_URL": jobs.queue.queue_url,
            "POWERTOOLS_SERVICE_NAME": project,
            "POWERTOOLS_METRICS_NAMESPACE": prefix,
        }
        functions: dict[str, DeclaredFunction] = {}
        specs = dict(declaration.functions)
        specs.setdefault(WORKER_FUNCTION, DEFAULT_WORKER)
        for report in build.functions:
            name = report.name
            spec = specs[name]
            environment = {**shared_environment, "STRATOSERVE_FUNCTION": name}
            if name == WORKER_FUNCTION:
                # The worker signs callbacks and spawns Modal's calls; nothing else reads either.
                environment["STRATOSERVE_CALLBACK_SECRET_ARN"] = signing.secret.secret_arn
                environment["STRATOSERVE_CALLBACKS_QUEUE_URL"] = callbacks.queue.queue_url
                if modal is not None:
                    environment["STRATOSERVE_MODAL_SECRET_ARN"] = modal.secret.secret_arn
            else:
                environment["STRATOSERVE_TENANTS_TABLE"] = tenants.table.table_name
            arch = ARCHITECTURES[spec.architecture]
            function = DeclaredFunction(
                self,
                pascal_case(name) + "Function",
                name=name,
                function_name=f"{prefix}-{name}",
                spec=spec,
                handler=WORKER_HANDLER if name == WORKER_FUNCTION else HTTP_HANDLER,
                package=Package(
                    kind=report.package,
                    code_zip=report.code_zip,
                    code_sha256=build.code.sha256,
                    layers=(
                        [layers.get(layer, arch) for layer in report.layers]
                        if report.package == "zip"
                        else []
                    ),
                    image_context=report.image_context,
                ),
                environment=environment,
                rollout=rollout,
            )
            functions[name] = function
            if spec.warmup is not None:
                WarmUp(
                    self,
                    pascal_case(name) + "WarmUp",
                    function=function.function,
                    function_name=f"{prefix}-{name}",
                    alias=function.alias,
                    spec=spec.warmup,
                )

        # --- grants: what each function's code calls ------------------------------------
        for name, function in functions.items():
            role = function.function
            # Jobs are queued (and the worker queues a GPU call's follow-ups); only SendMessage
            # is called (functions/runtime/job_queue.py), not GetQueueUrl or its attributes.
            jobs.queue.grant(role, "sqs:SendMessage")
            if name == WORKER_FUNCTION:
                store.grant_work(role)
                signing.secret.grant_read(role)
                # It queues finished jobs' callbacks, then sends them from that queue.
                callbacks.grant_queue(role)
                # A failed delivery comes back sooner (JobQueue.retry_later); reading and
                # deleting are the event source mapping's, granted with it below.
                jobs.queue.grant(role, "sqs:ChangeMessageVisibility")
            else:
                store.grant_submit(role)
                # The caller's tenant: one registry item per key id, never a key's value.
                tenants.grant_lookup(role)
        worker = functions[WORKER_FUNCTION]
        if modal is not None:
            modal.secret.grant_read(worker.function)
        worker.alias.add_event_source(
            event_sources.SqsEventSource(
                jobs.queue,
                batch_size=declaration.jobs.batch_size,
                max_batching_window=(
                    Duration.seconds(declaration.jobs.batching_window_s)
                    if declaration.jobs.batching_window_s
                    else None
                ),
                report_batch_item_failures=True,
                # Within the worker's reserved concurrency: a flood of jobs is worked off at
                # this pace, never throttled by, or taking from, the HTTP functions.
                max_concurrency=declaration.jobs_max_concurrency(),
            )
        )

        callbacks.consume_with(worker.alias)
        # No job stays queued or running until its TTL because nobody read it.
        store.grant_sweep(worker.function)
        JobSweep(self, "JobSweep", alias=worker.alias, schedule=declaration.jobs.sweep_schedule)

        # --- the API -------------------------------------------------------------------
        routes = RouteTable.from_declaration(declaration).routes()
        api = RestApi(
            self,
            "RestApi",
            name=prefix,
            stage_name=stage.name,
            routes=routes,
            aliases={
                name: function.alias
                for name, function in functions.items()
                if name != WORKER_FUNCTION
            },
            log_retention=retention,
            removal_policy=removal,
            health_throttle=declaration.deploy.health_throttle,
        )
        plans = UsagePlans(self, "UsagePlans", prefix=prefix, plans=declaration.plans, rest_api=api)

        predict_routes = [
            PredictRoute(model, f"/{api_version}/predict/{model}")
            for api_version, spec in declaration.api.items()
            for model in spec.models
        ]
        observability = Observability(
            self,
            "Observability",
            name=prefix,
            metrics_namespace=prefix,
            service=project,
            api=api.api,
            predict_routes=predict_routes,
            functions=list(functions.values()),
            queue=jobs.queue,
            dead_letter_queue=jobs.dead_letter_queue,
            callbacks_dead_letter_queue=callbacks.dead_letter_queue,
            thresholds=Thresholds(
                latency_p99_ms=declaration.deploy.latency_p99_ms,
                error_rate=declaration.deploy.error_rate,
                job_age_s=declaration.deploy.job_age_s,
            ),
            alarm_email=declaration.deploy.alarm_email,
        )

        # --- what the operator and the CLI need -----------------------------------------
        CfnOutput(self, "ApiUrl", value=api.api.url, description="the API's base URL")
        CfnOutput(self, "Stage", value=stage.name)
        CfnOutput(
            self,
            "UsagePlanPrefix",
            value=f"{prefix}-",
            description="usage plans are named <prefix><plan>: stratoserve keys finds them so",
        )
        for name, plan in plans.plans.items():
            CfnOutput(self, f"{pascal_case(name)}UsagePlanId", value=plan.usage_plan_id)
        CfnOutput(
            self,
            "AlarmTopicArn",
            value=observability.topic.topic_arn,
            description="the alarms' SNS topic: subscribe to it",
        )
        CfnOutput(self, "CallbackSigningSecretArn", value=signing.secret.secret_arn)
        CfnOutput(self, "JobsQueueUrl", value=jobs.queue.queue_url)
        CfnOutput(self, "JobsDeadLetterQueueUrl", value=jobs.dead_letter_queue.queue_url)
        CfnOutput(self, "CallbacksQueueUrl", value=callbacks.queue.queue_url)
        CfnOutput(self, "CallbacksDeadLetterQueueUrl", value=callbacks.dead_letter_queue.queue_url)
        CfnOutput(self, "JobsTableName", value=store.table.table_name)
        CfnOutput(self, "JobsBucketName", value=store.bucket.bucket_name)
        CfnOutput(
            self,
            "TenantsTableName",
            value=tenants.table.table_name,
            description="the tenant registry that `stratoserve keys --target aws` writes",
        )
        if modal is not None:
            CfnOutput(
                self,
                "ModalTokenSecretArn",
                value=modal.secret.secret_arn,
                description="put the Modal token here (docs/DEPLOY.md)",
            )
        self.functions = functions
        self.api = api
        self.job_store = store
        self.secrets = [signing.secret, *([modal.secret] if modal is not None else [])]
