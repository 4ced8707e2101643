"""One Lambda execution environment: the declaration, the function it runs as, and the
models it keeps loaded.

`get_environment()` is built once per environment, during init (the handler module calls
it at import), so models load outside any request and outside FastAPI's lifespan, which
Mangum may run per invocation.
"""

from __future__ import annotations

import json
import time
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from functions.runtime.aws import AwsClients, describe_error, error_code, public_reason
from functions.runtime.callbacks import CallbackSender, resolve_host
from functions.runtime.job_service import JobService, JobsUnavailable
from functions.runtime.models import LoadedModel, ModelKey, ModelUnavailableError, load_model
from functions.runtime.observability import logger, record_model_load, stuck_job_metrics
from functions.runtime.session_cache import SessionCache
from functions.runtime.tenants import Tenant, TenantDirectory
from stratoserve.declaration import API_FUNCTION, load_declaration, models_dir
from stratoserve.declaration import function_environment as variables
from stratoserve.declaration.schema import WORKER_FUNCTION

if TYPE_CHECKING:
    from mypy_boto3_lambda import LambdaClient

    from functions.runtime.callback_queue import CallbackQueue
    from functions.runtime.callbacks import Resolver
    from functions.runtime.gpu import GpuBackend
    from functions.runtime.jobs import Job
    from stratoserve.declaration import Declaration, FunctionSpec, PlanSpec


class Settings(BaseSettings):
    """What the environment is told by its variables (set by CDK on AWS, by the local stack
    on this machine): each field's variable is named in
    `stratoserve.declaration.function_environment` (a test holds the two together)."""

    model_config = SettingsConfigDict(env_prefix=variables.PREFIX, populate_by_name=True)

    function: str = API_FUNCTION
    config: Path = Path("stratoserve.toml")
    memory_mb: int | None = Field(default=None, alias="AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
    jobs_table: str | None = None
    jobs_bucket: str | None = None
    jobs_queue_url: str | None = None
    tenants_table: str | None = None
    """The tenant registry: API key id -> tenant (functions/runtime/tenants.py)."""
    callbacks_queue_url: str | None = None
    """The callbacks queue: the worker queues finished jobs' callbacks there, and
    consumes it (functions/worker/callbacks.py)."""
    callback_signing_key: SecretStr | None = None
    """Locally: the key tenants' callback secrets derive from (the local stack sets it)."""
    callback_secret_arn: str | None = None
    """On AWS: the Secrets Manager secret that holds that key."""
    local_stack: bool = False
    """Set by `stratoserve dev`: job callbacks may go to http://localhost."""
    gpu_executor_url: str | None = None
    """Locally: the GPU executor that `stratoserve dev` runs in place of Modal."""
    gpu_executor_token: SecretStr | None = None
    """Locally: the token the GPU executor asks of its callers (the worker's only)."""
    modal_secret_arn: str | None = None
    """On AWS: the Secrets Manager secret with the Modal token ({"token_id", "token_secret"});
    without it (and without an executor), Modal's own configuration (MODAL_TOKEN_ID/SECRET)."""
    lambda_endpoint_url: str | None = None
    """Locally: the local stack's Lambda Invoke API, where a warm-up's fan-out invokes."""


_SECRET_REFUSALS = frozenset(
    {
        "AccessDeniedException",
        "ResourceNotFoundException",
        "DecryptionFailure",
        "InvalidRequestException",
        "InvalidParameterException",
    }
)
"""Secrets Manager's answers that another try cannot change."""


@lru_cache
def get_settings() -> Settings:
    return Settings()


class UnknownModelError(LookupError):
    """The API version does not exist, or does not serve that model."""


class ExecutionEnvironment:
    def __init__(
        self,
        declaration: Declaration,
        source: Path,
        function: str,
        *,
        memory_mb: int | None = None,
        settings: Settings | None = None,
        resolve: Resolver = resolve_host,
    ) -> None:
        if function not in declaration.functions:
            known = ", ".join(sorted(declaration.functions))
            raise ValueError(f"function {function!r} is not declared (declared: {known})")
        self.declaration = declaration
        self.function_name = function
        self.function: FunctionSpec = declaration.functions[function]
        self.models_dir = models_dir(declaration, source)
        self.initialised_at = time.time()
        self.cold_start = True
        # On Lambda the configured memory (AWS_LAMBDA_FUNCTION_MEMORY_SIZE) is the truth.
        self.memory_mb = memory_mb or self.function.memory_mb
        budget = int(self.memory_mb * declaration.runtime.model_memory_fraction) << 20
        self.cache = SessionCache(load=self._load, budget_bytes=budget)
        self.settings = settings or Settings()
        self.aws = AwsClients()
        self.tenants = TenantDirectory(self.settings.tenants_table, lambda: self.aws.dynamodb)
        self._jobs: JobService | None = None
        self._callback_queue: CallbackQueue | None = None
        self.resolve_host = resolve
        """How callback hosts are resolved, at submission and before each POST."""

    @property
    def jobs(self) -> JobService:
        """The job store and queue, built on first use (boto3 is imported then)."""
        if self._jobs is None:
            from functions.runtime.job_queue import JobQueue
            from functions.runtime.job_store import JobStore

            settings = self.settings
            missing = [
                variable
                for variable, value in (
                    (variables.JOBS_TABLE, settings.jobs_table),
                    (variables.JOBS_BUCKET, settings.jobs_bucket),
                    (variables.JOBS_QUEUE_URL, settings.jobs_queue_url),
                )
                if not value
            ]
            if missing:
                raise JobsUnavailable(
                    f"jobs are not set up for this function ({', '.join(missing)} unset)",
                    retryable=False,
                )
            assert settings.jobs_table and settings.jobs_bucket and settings.jobs_queue_url
            store = JobStore.for_declaration(
                self.declaration,
                table=settings.jobs_table,
                bucket=settings.jobs_bucket,
                dynamodb=self.aws.dynamodb,
                s3=self.aws.s3,
                on_settled=_log_stuck_job,
            )
            queue = JobQueue(queue_url=settings.jobs_queue_url, sqs=self.aws.sqs)
            self._jobs = JobService(store=store, queue=queue)
        return self._jobs

    def lambda_client(self) -> LambdaClient:
        """Lambda's client, built on a warm-up's first fan-out (boto3 is imported then)."""
        return self.aws.lambda_client(self.settings.lambda_endpoint_url)

    @property
    def callback_queue(self) -> CallbackQueue:
        """The callbacks queue, built on first use (boto3 is imported then)."""
        if self._callback_queue is None:
            from functions.runtime.callback_queue import CallbackQueue

            if not self.settings.callbacks_queue_url:
                raise JobsUnavailable(
                    "callbacks are not set up for this function "
                    f"({variables.CALLBACKS_QUEUE_URL} unset)",
                    retryable=False,
                )
            self._callback_queue = CallbackQueue(
                queue_url=self.settings.callbacks_queue_url, sqs=self.aws.sqs
            )
        return self._callback_queue

    def callback_sender(self) -> CallbackSender:
        return CallbackSender(
            self._signing_key,
            attempts=self.declaration.jobs.callback_attempts,
            allow_loopback=self.settings.local_stack,
            resolve=self.resolve_host,
        )

    def gpu_backend(self) -> GpuBackend:
        """The GPU layer: the local executor under `stratoserve dev`, else Modal (the token
        fetched from Secrets Manager on first use, not at init)."""
        from functions.runtime.gpu import LocalExecutorBackend, ModalBackend

        if self.settings.gpu_executor_url:
            token = self.settings.gpu_executor_token
            return LocalExecutorBackend(
                self.settings.gpu_executor_url, token=token.get_secret_value() if token else ""
            )
        gpu = self.declaration.gpu
        if gpu is None:
            raise RuntimeError("no [gpu] table in the declaration")
        return ModalBackend(
            gpu.app, credentials=self._modal_token if self.settings.modal_secret_arn else None
        )

    def _modal_token(self) -> tuple[str, str]:
        """The Modal token from Secrets Manager. Failures name AWS's error code, never its
        message (tenants read the reason); one that another try cannot fix is a refusal."""
        from functions.runtime.gpu import GpuRefused, GpuUnavailable

        try:
            secret = self.aws.client("secretsmanager").get_secret_value(
                SecretId=self.settings.modal_secret_arn or ""
            )
        except Exception as error:
            reason = (
                f"the Modal token could not be read from Secrets Manager ({public_reason(error)})"
            )
            logger.error("Modal token not read", extra={"error": describe_error(error)})
            if error_code(error) in _SECRET_REFUSALS:
                raise GpuRefused(reason) from None
            raise GpuUnavailable(reason) from None
        try:
            token = json.loads(secret["SecretString"])
            token_id, token_secret = str(token["token_id"]), str(token["token_secret"])
        except (ValueError, KeyError, TypeError):
            raise GpuRefused(
                "the Modal secret in Secrets Manager must be JSON with token_id and token_secret"
            ) from None
        if not token_id:
            # The CDK app creates the secret with an empty token_id: the operator puts the
            # token there after `cdk deploy` (docs/DEPLOY.md).
            raise GpuRefused("the Modal secret in Secrets Manager holds no token yet")
        return token_id, token_secret

    def _signing_key(self) -> bytes:
        """The callback signing key: from the environment locally, from Secrets Manager
        on AWS (fetched on the first callback, not at init)."""
        if self.settings.callback_signing_key is not None:
            return self.settings.callback_signing_key.get_secret_value().encode()
        if self.settings.callback_secret_arn:
            secret = self.aws.client("secretsmanager").get_secret_value(
                SecretId=self.settings.callback_secret_arn
            )
            key: str = secret["SecretString"]
            self.settings.callback_signing_key = SecretStr(key)
            return key.encode()
        raise RuntimeError(
            f"no callback signing key: set {variables.CALLBACK_SIGNING_KEY} or "
            f"{variables.CALLBACK_SECRET_ARN}"
        )

    def served_keys(self) -> list[ModelKey]:
        """The versions of this function's models that some API version serves (the
        worker's models are all of them: it runs every model's jobs)."""
        models = (
            set(self.declaration.models)
            if self.function_name == WORKER_FUNCTION
            else set(self.function.models)
        )
        keys = {
            ModelKey(model, version)
            for model in models
            for version in self.declaration.served_versions(model)
        }
        return sorted(keys, key=str)

    def served_version(self, api_version: str, model: str) -> str:
        """The version of `model` that `api_version` serves, whichever function serves it."""
        try:
            return self.declaration.served_version(api_version, model)
        except LookupError as error:
            raise UnknownModelError(str(error)) from None

    def resolve(self, api_version: str, model: str) -> ModelKey:
        """The model a predict request runs here: served by `api_version` and this function."""
        version = self.served_version(api_version, model)
        if model not in self.function.models:
            raise UnknownModelError(f"model {model} is not served by function {self.function_name}")
        return ModelKey(model, version)

    def plan_of(self, tenant: Tenant | None) -> PlanSpec | None:
        """The declared plan of the caller; None means no plan limits what it may call."""
        if tenant is None or tenant.plan is None:
            return None
        return self.declaration.plans.get(tenant.plan)

    def _load(self, key: ModelKey) -> LoadedModel:
        spec = self.declaration.models.get(key.name)
        if spec is None or key.version not in spec.versions:
            # A job queued by a newer deploy, or a crafted message: not this declaration's.
            raise ModelUnavailableError(f"model {key} is not declared here")
        loaded = load_model(key, spec, self.models_dir, self.declaration.runtime)
        logger.info(
            "model loaded",
            extra={"model": key.name, "version": key.version, "load_ms": round(loaded.load_ms, 1)},
        )
        record_model_load(key.name, key.version, loaded.load_ms)
        return loaded


@lru_cache
def get_environment() -> ExecutionEnvironment:
    settings = get_settings()
    declaration = load_declaration(settings.config)
    environment = ExecutionEnvironment(
        declaration,
        settings.config,
        settings.function,
        memory_mb=settings.memory_mb,
        settings=settings,
    )
    environment.cache.preload(environment.served_keys())
    return environment


def _log_stuck_job(job: Job) -> None:
    logger.warning(
        "stuck job settled as failed",
        extra={"reason": job.error, **stuck_job_metrics(job.job_id, job.attempts)},
    )
