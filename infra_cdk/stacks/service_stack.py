"""The whole service in one stack: what `stratoserve dev` runs locally, on AWS. It wires
the constructs and grants each function what its code calls, nothing more."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, get_args

from aws_cdk import CfnOutput, Duration, RemovalPolicy, Stack
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_logs as logs

from infra_cdk.constructs import pascal_case
from infra_cdk.constructs.callback_queue import CallbackQueue
from infra_cdk.constructs.declared_function import DeclaredFunction, Rollout
from infra_cdk.constructs.declared_functions import FunctionEnvironment, declare_functions
from infra_cdk.constructs.job_queue import JobQueue
from infra_cdk.constructs.job_store import JobStore
from infra_cdk.constructs.job_sweep import JobSweep
from infra_cdk.constructs.observability import Observability, PredictRoute, Thresholds
from infra_cdk.constructs.rest_api import RestApi
from infra_cdk.constructs.secrets import CallbackSigningSecret, ModalTokenSecret
from infra_cdk.constructs.tenants import Tenants
from infra_cdk.constructs.usage_plans import UsagePlans
from stratoserve.declaration.routes import RouteTable
from stratoserve.declaration.schema import WORKER_FUNCTION, LogRetentionDays

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


@dataclass(frozen=True)
class Shared:
    """What the functions share: the jobs' queue, store and callbacks, the tenant registry
    and the secrets."""

    jobs: JobQueue
    callbacks: CallbackQueue
    store: JobStore
    tenants: Tenants
    signing: CallbackSigningSecret
    modal: ModalTokenSecret | None


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
        self.declaration, self.stage = declaration, stage
        self.prefix = stage.prefix(declaration.project.name)
        self.removal = RemovalPolicy.RETAIN if stage.retain_data else RemovalPolicy.DESTROY
        self.retention = RETENTION[
            stage.log_retention_days or declaration.deploy.log_retention_days
        ]

        jobs, callbacks = self._queues()
        shared = Shared(
            jobs=jobs,
            callbacks=callbacks,
            store=JobStore(
                self, "JobStore", ttl_days=declaration.jobs.ttl_days, retain=stage.retain_data
            ),
            tenants=Tenants(self, "Tenants", name=self.prefix, retain=stage.retain_data),
            signing=CallbackSigningSecret(
                self, "CallbackSigningSecret", name=self.prefix, removal_policy=self.removal
            ),
            modal=(
                ModalTokenSecret(
                    self, "ModalTokenSecret", name=self.prefix, app=declaration.gpu.app
                )
                if declaration.gpu is not None
                else None
            ),
        )
        functions = declare_functions(
            self,
            declaration=declaration,
            build=build,
            prefix=self.prefix,
            environment=self._environment(shared),
            rollout=self._rollout(),
        )
        _grant_calls(functions, shared)
        self._work_jobs(functions[WORKER_FUNCTION], shared)
        api, plans = self._api(functions)
        observability = self._observability(functions, api=api, shared=shared)
        self._outputs(shared, api=api, plans=plans, observability=observability)
        self.functions = functions
        self.api = api
        self.job_store = shared.store
        self.secrets = [
            shared.signing.secret,
            *([shared.modal.secret] if shared.modal is not None else []),
        ]

    def _queues(self) -> tuple[JobQueue, CallbackQueue]:
        jobs = JobQueue(
            self,
            "JobQueue",
            name=self.prefix,
            visibility_timeout_s=self.declaration.visibility_timeout_s(),
            max_receive_count=self.declaration.jobs.max_receive_count,
            ttl_days=self.declaration.jobs.ttl_days,
            # Messages are in flight, not records (the table is): a queue kept after a
            # delete would only block the next deploy of its fixed name.
            removal_policy=RemovalPolicy.DESTROY,
        )
        callbacks = CallbackQueue(
            self,
            "CallbackQueue",
            name=self.prefix,
            visibility_timeout_s=self.declaration.visibility_timeout_s(),
            attempts=self.declaration.jobs.callback_attempts,
            ttl_days=self.declaration.jobs.ttl_days,
        )
        return jobs, callbacks

    def _environment(self, shared: Shared) -> FunctionEnvironment:
        return FunctionEnvironment(
            service=self.declaration.project.name,
            metrics_namespace=self.prefix,
            jobs_table=shared.store.table.table_name,
            jobs_bucket=shared.store.bucket.bucket_name,
            jobs_queue_url=shared.jobs.queue.queue_url,
            tenants_table=shared.tenants.table.table_name,
            callbacks_queue_url=shared.callbacks.queue.queue_url,
            callback_secret_arn=shared.signing.secret.secret_arn,
            modal_secret_arn=(shared.modal.secret.secret_arn if shared.modal is not None else None),
        )

    def _rollout(self) -> Rollout:
        deploy = self.declaration.deploy
        return Rollout(
            deployment=deploy.deployment if self.stage.gradual_deployment else "LambdaAllAtOnce",
            error_rate=deploy.error_rate,
            provisioned=self.stage.provisioned_concurrency,
            log_retention=self.retention,
            removal_policy=self.removal,
        )

    def _work_jobs(self, worker: DeclaredFunction, shared: Shared) -> None:
        """The worker's `live` alias consumes the jobs and the callbacks, and sweeps."""
        settings = self.declaration.jobs
        worker.alias.add_event_source(
            event_sources.SqsEventSource(
                shared.jobs.queue,
                batch_size=settings.batch_size,
                max_batching_window=(
                    Duration.seconds(settings.batching_window_s)
                    if settings.batching_window_s
                    else None
                ),
                report_batch_item_failures=True,
                # Within the worker's reserved concurrency: a flood of jobs is worked off at
                # this pace, never throttled by, or taking from, the HTTP functions.
                max_concurrency=self.declaration.jobs_max_concurrency(),
            )
        )
        shared.callbacks.consume_with(worker.alias)
        # No job stays queued or running until its TTL because nobody read it.
        shared.store.grant_sweep(worker.function)
        JobSweep(self, "JobSweep", alias=worker.alias, schedule=settings.sweep_schedule)

    def _api(self, functions: dict[str, DeclaredFunction]) -> tuple[RestApi, UsagePlans]:
        """The routes of the declaration, each to its function's `live` alias, and a usage
        plan per declared plan."""
        api = RestApi(
            self,
            "RestApi",
            name=self.prefix,
            stage_name=self.stage.name,
            routes=RouteTable.from_declaration(self.declaration).routes(),
            aliases={
                name: function.alias
                for name, function in functions.items()
                if name != WORKER_FUNCTION
            },
            log_retention=self.retention,
            removal_policy=self.removal,
            health_throttle=self.declaration.deploy.health_throttle,
        )
        plans = UsagePlans(
            self, "UsagePlans", prefix=self.prefix, plans=self.declaration.plans, rest_api=api
        )
        return api, plans

    def _observability(
        self, functions: dict[str, DeclaredFunction], *, api: RestApi, shared: Shared
    ) -> Observability:
        deploy = self.declaration.deploy
        return Observability(
            self,
            "Observability",
            name=self.prefix,
            metrics_namespace=self.prefix,
            service=self.declaration.project.name,
            api=api.api,
            predict_routes=[
                PredictRoute(model, f"/{api_version}/predict/{model}")
                for api_version, spec in self.declaration.api.items()
                for model in spec.models
            ],
            functions=list(functions.values()),
            queue=shared.jobs.queue,
            dead_letter_queue=shared.jobs.dead_letter_queue,
            callbacks_dead_letter_queue=shared.callbacks.dead_letter_queue,
            thresholds=Thresholds(
                latency_p99_ms=deploy.latency_p99_ms,
                error_rate=deploy.error_rate,
                job_age_s=deploy.job_age_s,
            ),
            alarm_email=deploy.alarm_email,
        )

    def _outputs(
        self, shared: Shared, *, api: RestApi, plans: UsagePlans, observability: Observability
    ) -> None:
        """What the operator and the CLI need."""
        jobs, callbacks, store, modal = shared.jobs, shared.callbacks, shared.store, shared.modal
        CfnOutput(self, "ApiUrl", value=api.api.url, description="the API's base URL")
        CfnOutput(self, "Stage", value=self.stage.name)
        CfnOutput(
            self,
            "UsagePlanPrefix",
            value=f"{self.prefix}-",
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
        CfnOutput(self, "CallbackSigningSecretArn", value=shared.signing.secret.secret_arn)
        CfnOutput(self, "JobsQueueUrl", value=jobs.queue.queue_url)
        CfnOutput(self, "JobsDeadLetterQueueUrl", value=jobs.dead_letter_queue.queue_url)
        CfnOutput(self, "CallbacksQueueUrl", value=callbacks.queue.queue_url)
        CfnOutput(self, "CallbacksDeadLetterQueueUrl", value=callbacks.dead_letter_queue.queue_url)
        CfnOutput(self, "JobsTableName", value=store.table.table_name)
        CfnOutput(self, "JobsBucketName", value=store.bucket.bucket_name)
        CfnOutput(
            self,
            "TenantsTableName",
            value=shared.tenants.table.table_name,
            description="the tenant registry that `stratoserve keys --target aws` writes",
        )
        if modal is not None:
            CfnOutput(
                self,
                "ModalTokenSecretArn",
                value=modal.secret.secret_arn,
                description="put the Modal token here (docs/DEPLOY.md)",
            )


def _grant_calls(functions: dict[str, DeclaredFunction], shared: Shared) -> None:
    """What each function's code calls, and nothing more."""
    jobs, callbacks, store, tenants = shared.jobs, shared.callbacks, shared.store, shared.tenants
    for name, function in functions.items():
        role = function.function
        # Jobs are queued (and the worker queues a GPU call's follow-ups); only SendMessage
        # is called (functions/runtime/job_queue.py), not GetQueueUrl or its attributes.
        jobs.queue.grant(role, "sqs:SendMessage")
        if name == WORKER_FUNCTION:
            store.grant_work(role)
            shared.signing.secret.grant_read(role)
            # It queues finished jobs' callbacks, then sends them from that queue.
            callbacks.grant_queue(role)
            # A failed delivery comes back sooner (JobQueue.retry_later); reading and
            # deleting are the event source mapping's, granted with it (_work_jobs).
            jobs.queue.grant(role, "sqs:ChangeMessageVisibility")
        else:
            store.grant_submit(role)
            # The caller's tenant: one registry item per key id, never a key's value.
            tenants.grant_lookup(role)
    if shared.modal is not None:
        shared.modal.secret.grant_read(functions[WORKER_FUNCTION].function)
