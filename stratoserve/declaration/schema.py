"""The shape of stratoserve.toml, as pydantic models.

Structure and value ranges live here; rules that relate one part of the file to another
(an API version naming a model that exists, a model served by one function only) live in
the loader, so that every problem can be reported with its full key path.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

VersionKey = Annotated[str, Field(pattern=r"^[0-9]+$")]
ApiVersionKey = Annotated[str, Field(pattern=r"^v[0-9]+$")]
Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,39}$")]

API_FUNCTION = "api"
"""The function that answers everything but predict: health, model listings and jobs."""

WORKER_FUNCTION = "worker"
"""The SQS consumer that runs every model's jobs."""

RESERVED_FUNCTIONS = (API_FUNCTION, WORKER_FUNCTION)

HTTP_HANDLER = "functions.api.handler.handler"
"""The Lambda handler of every HTTP-facing function (the api function and each model's)."""

WORKER_HANDLER = "functions.worker.handler.handler"

INTEGRATION_TIMEOUT_S = 29
"""API Gateway's integration timeout: an HTTP function running longer is answered 504."""

UNCLAIMED_MARGIN_S = 300
"""Slack on a job message's longest way to a worker: the event source mapping's polling,
clock skew between the functions."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProjectSpec(Strict):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,29}$")] = "stratoserve"
    """Prefixes every deployed name (stack, functions, queues, usage plans): lowercase
    letters, digits and hyphens, as CloudFormation's stack names allow."""
    models_dir: str = "build/models"
    """Where built artifacts live, relative to stratoserve.toml (Lambda overrides it)."""
    account_concurrency: Annotated[int, Field(ge=10)] = 1000
    """The AWS account's Lambda concurrent executions in this region (Service Quotas,
    "Concurrent executions": 1,000 by default, often 10 in a new account). The functions'
    reserved concurrency must leave UNRESERVED_CONCURRENCY of it to everything else."""


UNRESERVED_CONCURRENCY = 100
"""Lambda keeps this much of an account's concurrency unreserved: a function's reserved
concurrency is refused when the account's unreserved executions would fall below it."""

RESERVED_CONCURRENCY_DEFAULT = 100
"""The most a function reserves by default (functions.<name>.reserved_concurrency unset)."""

STAGES_PER_ACCOUNT = 2
"""The default reservations leave room for this many stages (dev and prod) in one account."""

CALLBACKS_MAX_CONCURRENCY = 2
"""Worker invocations the callbacks queue's event source runs at once (the least SQS
allows). It shares the worker's reserved concurrency with the jobs queue's event source."""


class RuntimeSpec(Strict):
    intra_op_threads: Annotated[int, Field(ge=1, le=64)] = 1
    inter_op_threads: Annotated[int, Field(ge=1, le=64)] = 1
    cpu_mem_arena: bool = False
    graph_optimization: Literal["disable", "basic", "extended", "all"] = "basic"
    model_memory_fraction: Annotated[float, Field(gt=0, le=1)] = 0.6
    """Share of a function's memory the session cache may fill before it evicts idle models."""


class ModelVersionSpec(Strict):
    artifact: str
    tokenizer: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    """Handed to the recipe that builds this version (e.g. precision = "int8")."""


class ModelSpec(Strict):
    task: Literal["classify", "embed"]
    recipe: str | None = None
    """Builds the artifacts; leave it out to bring your own ONNX file."""
    description: str = ""
    versions: dict[VersionKey, ModelVersionSpec] = Field(min_length=1)
    max_text_chars: Annotated[int, Field(ge=1, le=6_000_000)] = 100_000
    """The longest text one input may be (embed): a longer one is refused (422) inline and
    at a job's submission. Texts are cut to what max_tokens can use before tokenizing, so
    this bounds the work an input may ask for, not the tokens it yields."""


class ApiVersionSpec(Strict):
    models: dict[str, VersionKey] = Field(min_length=1)
    """Which version of each model this API version serves."""
    deprecated: dt.date | None = None
    sunset: dt.date | None = None


Schedule = Annotated[
    str,
    Field(
        # rate: singular for 1, plural above (AWS refuses "rate(1 minutes)", "rate(5 hour)")
        pattern=r"^(rate\(1 (minute|hour|day)\)"
        r"|rate\(([2-9]|[1-9][0-9]+) (minutes|hours|days)\)"
        r"|cron\(\S+ \S+ \S+ \S+ \S+ \S+\))$"
    ),
]
"""An EventBridge / Application Auto Scaling schedule: "rate(5 minutes)" or
"cron(0 8 ? * MON-FRI *)" (six fields, UTC)."""


class WarmupSpec(Strict):
    """Scheduled warm-up events (EventBridge) that keep environments and their models loaded."""

    schedule: Schedule = "rate(5 minutes)"
    concurrency: Annotated[int, Field(ge=1, le=50)] = 1
    """How many environments to keep warm: the warmed function fans the event out to this
    many concurrent invocations of itself, so that each lands in its own environment."""


class ScheduledCapacity(Strict):
    """Provisioned concurrency bounds from a time on (Application Auto Scaling's
    scheduled action), until the next schedule changes them."""

    schedule: Schedule
    min: Annotated[int, Field(ge=0)]
    max: Annotated[int, Field(ge=1)]


class ScalingSpec(Strict):
    """Application Auto Scaling of a function's provisioned concurrency."""

    max: Annotated[int, Field(ge=1)]
    """The most provisioned environments target tracking may add."""
    utilization: Annotated[float, Field(ge=0.1, le=0.9)] = 0.7
    """Target tracking keeps provisioned concurrency utilization near this."""
    schedules: list[ScheduledCapacity] = Field(default_factory=list)


class FunctionSpec(Strict):
    models: list[str] = Field(default_factory=list)
    memory_mb: Annotated[int, Field(ge=128, le=10240)] = 1024
    timeout_s: Annotated[int, Field(ge=1, le=900)] = 29
    """At most 29 behind API Gateway (its integration timeout); the worker may take 900."""
    architecture: Literal["arm64", "x86_64"] = "arm64"
    package: Literal["zip", "image"] = "zip"
    """zip: code plus layers (250 MB unzipped at most); image: a container image built from
    functions/Dockerfile by `cdk deploy` (10 GB), for models too big for layers."""
    reserved_concurrency: Annotated[int, Field(ge=0)] | None = None
    """Executions set aside for this function, and its cap: a flood of one route (the keyless
    /health included) cannot take the account's concurrency from the others. Unset: the
    loader gives it an even share (at most RESERVED_CONCURRENCY_DEFAULT) of what the account
    can reserve for STAGES_PER_ACCOUNT stages; none where the account has nothing to reserve."""
    provisioned_concurrency: Annotated[int, Field(ge=1)] | None = None
    """Environments initialised ahead of traffic on the `live` alias (the minimum, when
    `scaling` is declared)."""
    scaling: ScalingSpec | None = None
    snapstart: bool = False
    """Lambda SnapStart: init runs once per published version and is restored from a
    snapshot (zip functions; not with provisioned concurrency)."""
    warmup: WarmupSpec | None = None
    local_environments: Annotated[int, Field(ge=1, le=32)] = 2
    """How many execution environments `stratoserve dev` may run for it at once."""


DEFAULT_WORKER = FunctionSpec(memory_mb=2048, timeout_s=60)
"""The worker function when the declaration does not size it."""

QUOTA_MAX_OFFSET = {"DAY": 0, "WEEK": 6, "MONTH": 27}
"""API Gateway's QuotaSettings.offset: the day a period starts (WEEK 0 = Sunday, MONTH
0 = the 1st). MONTH stops at 27 so the first day exists in every month, February too."""


class QuotaSpec(Strict):
    limit: Annotated[int, Field(ge=1)]
    period: Literal["DAY", "WEEK", "MONTH"]
    offset: Annotated[int, Field(ge=0)] = 0
    """The day a period starts: WEEK 0 = Sunday .. 6; MONTH 0 = the 1st .. 27; DAY 0."""


class ThrottleSpec(Strict):
    rate: Annotated[float, Field(gt=0)]
    """Steady requests per second."""
    burst: Annotated[int, Field(ge=1)]
    """How many requests may arrive at once (the token bucket's size)."""


class PlanSpec(Strict):
    description: str = ""
    rate: Annotated[float, Field(gt=0)]
    burst: Annotated[int, Field(ge=1)]
    quota: QuotaSpec | None = None
    throttles: dict[str, ThrottleSpec] = Field(default_factory=dict)
    """Per-route limits inside the plan, keyed by resource path ("/v2/predict/embed")."""
    models: list[str] = Field(default_factory=lambda: ["*"])
    """The models a key on this plan may call; "*" is every declared model."""
    gpu_jobs: bool = False

    def allows(self, model: str) -> bool:
        return "*" in self.models or model in self.models


class RoutingSpec(Strict):
    inline_max_inputs: Annotated[int, Field(ge=1)] = 64
    """Above this many inputs a predict request becomes a job (202) instead of running inline."""
    job_max_inputs: Annotated[int, Field(ge=1)] = 10_000
    """Above this many inputs a job is refused (413): the worker must finish it in time."""
    gpu_min_inputs: Annotated[int, Field(ge=1)] | None = None
    """A job of at least this many inputs goes to the GPU layer (for plans with gpu_jobs)."""
    gpu_min_bytes: Annotated[int, Field(ge=1)] | None = None
    """...or whose inputs weigh at least this many bytes of JSON (long texts)."""
    gpu_max_inputs: Annotated[int, Field(ge=1, le=100_000)] = 20_000
    """The most inputs a GPU job may carry (413 above). Its result comes back through the
    worker's memory: 20,000 MiniLM vectors are ~150 MB of JSON."""
    without_gpu: Literal["cpu", "refuse"] = "cpu"
    """A GPU-sized job from a plan without gpu_jobs: run it on the CPU worker (within
    job_max_inputs), or refuse it (403) with a message that says why."""
    gpu_fallback: bool = True
    """When the GPU layer fails a job (unreachable, the call errors, past gpu.deadline_s),
    run it on the CPU worker instead (if within job_max_inputs); otherwise it fails."""

    def wants_gpu(self, inputs: int, payload_bytes: int) -> bool:
        return (self.gpu_min_inputs is not None and inputs >= self.gpu_min_inputs) or (
            self.gpu_min_bytes is not None and payload_bytes >= self.gpu_min_bytes
        )


GpuType = Annotated[
    str,
    Field(pattern=r"^(T4|L4|A10G?|A100|A100-40GB|A100-80GB|L40S|H100|H100!|H200|B200)(:[1-8])?$"),
]


class GpuSpec(Strict):
    """The GPU layer: the Modal app in gpu_jobs/ and how the worker dispatches to it."""

    app: Name = "stratoserve-gpu"
    """The Modal app's name (`modal deploy gpu_jobs/app.py` deploys it under this name)."""
    models: list[str] = Field(min_length=1)
    """The models the GPU app serves (every version an API version serves)."""
    gpu: GpuType = "L4"
    """Modal's GPU type, optionally with a count ("H100:2")."""
    min_containers: Annotated[int, Field(ge=0, le=100)] = 0
    """Containers kept warm (0 = scale to zero when idle)."""
    scaledown_window_s: Annotated[int, Field(ge=2, le=1200)] = 300
    """How long an idle container waits for work before it stops."""
    memory_snapshot: bool = True
    """Snapshot the container after imports and file reads: faster cold starts."""
    max_batch_size: Annotated[int, Field(ge=1, le=1000)] = 256
    """Inputs per model run on the GPU (modal.batched's max_batch_size)."""
    wait_ms: Annotated[int, Field(ge=0, le=10_000)] = 20
    """How long a container waits to fill a batch (modal.batched's wait_ms)."""
    timeout_s: Annotated[int, Field(ge=10, le=86_400)] = 900
    """Modal's limit on one call."""
    retries: Annotated[int, Field(ge=0, le=10)] = 2
    """Modal's retries of a call whose container failed."""
    deadline_s: Annotated[int, Field(ge=5, le=86_400)] = 3600
    """A GPU job not finished this long after the worker first took it is cancelled, and
    falls back to the CPU worker or fails (routing.<model>.gpu_fallback). At least
    timeout_s x (retries + 1): what Modal may spend on one call."""
    poll_interval_s: Annotated[int, Field(ge=1, le=900)] = 10
    """How often the worker asks about a running GPU call (an SQS message delayed by this)."""
    dispatch_attempts: Annotated[int, Field(ge=1, le=10)] = 3
    """Tries of one spawn, with backoff, before the delivery fails (or falls back)."""
    breaker_failures: Annotated[int, Field(ge=1, le=100)] = 5
    """Consecutive failed calls to Modal after which the worker stops trying for a while."""
    breaker_reset_s: Annotated[int, Field(ge=1, le=3600)] = 60
    """How long the circuit stays open before one trial call."""


class JobsSpec(Strict):
    """The asynchronous path: the SQS queue, the worker's event source mapping, the store."""

    batch_size: Annotated[int, Field(ge=1, le=10_000)] = 10
    """Records per worker invocation (the event source mapping's BatchSize)."""
    batching_window_s: Annotated[int, Field(ge=0, le=300)] = 1
    """How long the event source mapping gathers records before it invokes the worker."""
    max_receive_count: Annotated[int, Field(ge=5, le=1000)] = 5
    """Deliveries of a message before SQS moves it to the dead-letter queue."""
    visibility_timeout_s: Annotated[int, Field(ge=0, le=43_200)] | None = None
    """How long a delivered message stays hidden; default 6x the worker's timeout."""
    retry_delay_s: Annotated[float, Field(ge=0, le=900)] = 2.0
    """A failed record comes back after this, doubled per attempt (capped at the
    visibility timeout), instead of after the whole visibility timeout."""
    ttl_days: Annotated[int, Field(ge=1, le=365)] = 7
    """Job records, idempotency keys and results expire after this many days."""
    result_inline_max_kb: Annotated[int, Field(ge=1, le=300)] = 256
    """Larger results go to S3 and the job answer carries a presigned URL."""
    callback_attempts: Annotated[int, Field(ge=1, le=10)] = 5
    """Deliveries of a job's callback, one POST each, from the callbacks queue (its
    maxReceiveCount; a backoff of retry_delay_s, doubling, between them) before it is
    given up and its message moves to the callbacks dead-letter queue."""
    max_concurrency: Annotated[int, Field(ge=2, le=1000)] | None = None
    """The most worker invocations the jobs queue's event source mapping runs at once (its
    MaximumConcurrency): at most functions.worker.reserved_concurrency less the callbacks
    queue's CALLBACKS_MAX_CONCURRENCY, which is the default."""
    sweep_schedule: Schedule = "rate(15 minutes)"
    """When the worker sweeps the job table for jobs that can never run any more (never
    sent, dead-lettered unclaimed, abandoned mid-run): it fails them with the reason and
    counts them in StuckJobs, whose alarm goes off. A read settles such a job too. The
    sweep then queues the callbacks no worker queued (JobStore.pending_callbacks)."""


DeploymentConfig = Literal[
    "LambdaAllAtOnce",
    "LambdaCanary10Percent5Minutes",
    "LambdaCanary10Percent10Minutes",
    "LambdaCanary10Percent15Minutes",
    "LambdaCanary10Percent30Minutes",
    "LambdaLinear10PercentEvery1Minute",
    "LambdaLinear10PercentEvery2Minutes",
    "LambdaLinear10PercentEvery3Minutes",
    "LambdaLinear10PercentEvery10Minutes",
]
"""CodeDeploy's predefined Lambda deployment configurations (CodeDeployDefault.<name>)."""

LogRetentionDays = Literal[
    1,
    3,
    5,
    7,
    14,
    30,
    60,
    90,
    120,
    150,
    180,
    365,
    400,
    545,
    731,
    1096,
    1827,
    2192,
    2557,
    2922,
    3288,
    3653,
]


class DeploySpec(Strict):
    """How `cdk deploy` rolls out and watches the functions (read by the CDK app only)."""

    deployment: DeploymentConfig = "LambdaCanary10Percent5Minutes"
    """How a new version reaches the `live` alias; the dev stage always goes all at once.
    An alarm during the rollout moves traffic back to the previous version."""
    alarm_email: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    """Subscribed to the alarm topic (it confirms by mail), if given."""
    log_retention_days: LogRetentionDays = 30
    """CloudWatch Logs retention of the functions' and the API's access logs (prod stage)."""
    latency_p99_ms: Annotated[int, Field(ge=10, le=29_000)] = 3000
    """A model's predict route above this p99 (API Gateway latency, 5 minutes) alarms."""
    error_rate: Annotated[float, Field(gt=0, le=1)] = 0.01
    """A share of 5XX answers (or of a function's invocations erring) above this alarms."""
    job_age_s: Annotated[int, Field(ge=60, le=1_209_600)] = 900
    """The oldest queued job message older than this alarms (the worker is not keeping up)."""
    health_throttle: ThrottleSpec = Field(default_factory=lambda: ThrottleSpec(rate=10, burst=20))
    """The keyless GET /health, throttled in the stage for every caller together (no usage
    plan covers it): a flood of it is answered 429 by API Gateway, not by the api function."""


class Declaration(Strict):
    project: ProjectSpec = Field(default_factory=ProjectSpec)
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec)
    models: dict[Name, ModelSpec] = Field(min_length=1)
    api: dict[ApiVersionKey, ApiVersionSpec] = Field(min_length=1)
    functions: dict[Name, FunctionSpec] = Field(default_factory=dict)
    routing: dict[str, RoutingSpec] = Field(default_factory=dict)
    jobs: JobsSpec = Field(default_factory=JobsSpec)
    plans: dict[Name, PlanSpec] = Field(default_factory=dict)
    gpu: GpuSpec | None = None
    """The GPU layer (Modal); without it every job runs on the CPU worker."""
    deploy: DeploySpec = Field(default_factory=DeploySpec)

    def runs_on_gpu(self, model: str) -> bool:
        return self.gpu is not None and model in self.gpu.models

    def function_for_model(self, model: str) -> str:
        for name, function in self.functions.items():
            if model in function.models:
                return name
        raise KeyError(model)

    def served_version(self, api_version: str, model: str) -> str:
        """The version of `model` that `api_version` serves; a LookupError says what exists."""
        api = self.api.get(api_version)
        if api is None:
            raise LookupError(
                f"unknown API version {api_version} (declared: {', '.join(self.api)})"
            )
        version = api.models.get(model)
        if version is None:
            raise LookupError(
                f"unknown model {model} in {api_version} (available: {', '.join(api.models)})"
            )
        return version

    def served_versions(self, model: str) -> list[str]:
        """The versions of `model` that some API version serves, oldest first."""
        versions = {api.models[model] for api in self.api.values() if model in api.models}
        return sorted(versions, key=int)

    def most_generous_plan(self) -> str | None:
        """The plan the local dev key gets: the widest model access, then the highest
        rate, burst and quota."""
        if not self.plans:
            return None

        def generosity(name: str) -> tuple[int, bool, float, int, int]:
            plan = self.plans[name]
            models = len(self.models) if "*" in plan.models else len(plan.models)
            quota = plan.quota.limit if plan.quota else 2**62
            return (models, plan.gpu_jobs, plan.rate, plan.burst, quota)

        return max(self.plans, key=generosity)

    def resource_paths(self) -> list[str]:
        """The API's keyed resources, as the gateway and API Gateway lay them out."""
        paths = []
        for api_version, spec in self.api.items():
            paths.append(f"/{api_version}/models")
            paths.append(f"/{api_version}/jobs")
            paths.append(f"/{api_version}/jobs/{{job_id}}")
            paths.extend(f"/{api_version}/predict/{model}" for model in spec.models)
        return paths

    def visibility_timeout_s(self) -> int:
        """The jobs queue's visibility timeout: declared, or 6x the worker's timeout (AWS's
        advice for an SQS event source, so a slow batch is not delivered twice)."""
        if self.jobs.visibility_timeout_s is not None:
            return self.jobs.visibility_timeout_s
        worker = self.functions.get(WORKER_FUNCTION, DEFAULT_WORKER)
        return 6 * worker.timeout_s

    def jobs_max_concurrency(self) -> int:
        """The jobs queue's event source mapping's MaximumConcurrency: declared, or what the
        worker's reserved concurrency leaves beside the callbacks queue's event source
        (within SQS's 2..1000), or 2 where nothing is reserved."""
        if self.jobs.max_concurrency is not None:
            return self.jobs.max_concurrency
        reserved = self.functions.get(WORKER_FUNCTION, DEFAULT_WORKER).reserved_concurrency
        if reserved is None:
            return 2
        return min(1000, max(2, reserved - CALLBACKS_MAX_CONCURRENCY))

    def unclaimed_job_after_s(self) -> int:
        """How long a job may stay queued, unclaimed, while its message may still reach a
        worker: sent within the submitting function's timeout, then gathered for the
        batching window and, each time a delivery dies before it claims the job, hidden for
        the visibility timeout, max_receive_count times. Later, its message is in the
        dead-letter queue, or was never sent."""
        submit_s = max(
            (spec.timeout_s for name, spec in self.functions.items() if name != WORKER_FUNCTION),
            default=INTEGRATION_TIMEOUT_S,
        )
        deliveries_s = (self.jobs.batching_window_s + self.visibility_timeout_s()) * (
            self.jobs.max_receive_count
        )
        return submit_s + deliveries_s + UNCLAIMED_MARGIN_S

    def routing_for(self, model: str) -> RoutingSpec:
        return self.routing.get(model, RoutingSpec())

    def successor_of(self, api_version: str) -> str | None:
        """The next newer API version, if one is declared."""
        newer = sorted(
            (v for v in self.api if int(v[1:]) > int(api_version[1:])), key=lambda v: int(v[1:])
        )
        return newer[0] if newer else None
