"""`stratoserve dev`: starts every declared function's execution environments, then the
gateway, and records the running stack under the state directory for other commands."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from functions.runtime import callback_queue
from functions.worker.sweep import SWEEP_EVENT
from stratoserve.declaration import function_environment as variables
from stratoserve.declaration import load_declaration, models_dir
from stratoserve.declaration.routes import RouteTable
from stratoserve.declaration.schema import HTTP_HANDLER, WORKER_FUNCTION, WORKER_HANDLER
from stratoserve.jobs import JobResources, create_job_resources
from stratoserve.keys import KeysError
from stratoserve.local.aws import LocalAws, LocalAwsError, function_environment
from stratoserve.local.aws import client as aws_client
from stratoserve.local.environments import FunctionConfig, FunctionPool, close_all
from stratoserve.local.faults import FaultsApi
from stratoserve.local.gateway import Gateway
from stratoserve.local.gpu_calls import ExecutorError
from stratoserve.local.gpu_executor import ExecutorProcess, launch
from stratoserve.local.header_limit import server_options
from stratoserve.local.key_restore import restore_keys
from stratoserve.local.lambda_api import LambdaApi, LambdaEndpoint
from stratoserve.local.loopback import new_token
from stratoserve.local.metering import Meter, UsageFile
from stratoserve.local.poller import EventSourcePoller
from stratoserve.local.scheduler import Warmup, WarmupScheduler, declared_warmups
from stratoserve.local.schedules import UnsupportedSchedule, parse_schedule
from stratoserve.local.tasks import cancel_all
from stratoserve.local.throttling import PlanLimits, Quota, Throttle, UsageLimiter

if TYPE_CHECKING:
    from collections.abc import Callable

    from stratoserve.declaration import Declaration
    from stratoserve.local.keys import GatewayKeys

STATE_DIR_ENV = "STRATOSERVE_STATE_DIR"
USAGE_FLUSH_S = 2.0

logger = logging.getLogger("stratoserve.stack")


class StackError(Exception):
    """The local stack cannot start; the message says why and what to do."""


@dataclass(frozen=True)
class DevOptions:
    config: Path
    host: str
    port: int
    api_key: str
    state_dir: Path


def state_dir(project_root: Path) -> Path:
    return Path(os.environ.get(STATE_DIR_ENV) or project_root / ".stratoserve")


def secure_state_dir(state: Path) -> None:
    """The state folder, the owner's only (700): it holds the stack's token, the keys and
    the callback signing key. A folder made before this rule is tightened."""
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    state.chmod(0o700)


def running_stack(state: Path) -> dict[str, Any] | None:
    """The running `stratoserve dev` recorded in `state`, if its process is alive."""
    try:
        record: dict[str, Any] = json.loads((state / "stack.json").read_text())
        os.kill(int(record["pid"]), 0)
    except (FileNotFoundError, json.JSONDecodeError, KeyError, ValueError, ProcessLookupError):
        return None
    except PermissionError:
        pass  # alive, another user's: still the running stack
    return record


def missing_artifacts(declaration: Declaration, source: Path) -> list[str]:
    root = models_dir(declaration, source)
    missing = []
    for name, spec in declaration.models.items():
        for version, version_spec in spec.versions.items():
            for relative in (version_spec.artifact, version_spec.tokenizer):
                if relative and not (root / relative).is_file():
                    missing.append(f"{name} version {version}: {root / relative}")
    return missing


def function_configs(
    declaration: Declaration,
    source: Path,
    aws: dict[str, str] | None = None,
    jobs: dict[str, str] | None = None,
    worker: dict[str, str] | None = None,
    lambda_url: str | None = None,
) -> dict[str, FunctionConfig]:
    """Each function's local configuration; `worker` holds variables only the worker gets
    (the GPU executor's URL); `lambda_url` is the local Invoke API (a warm-up fans out
    there)."""
    shared = {
        **(aws or {}),
        **(jobs or {}),
        **({variables.LAMBDA_ENDPOINT_URL: lambda_url} if lambda_url else {}),
        variables.CONFIG: str(source.resolve()),
        variables.MODELS_DIR: str(models_dir(declaration, source)),
        variables.POWERTOOLS_SERVICE_NAME: declaration.project.name,
        "AWS_REGION": os.environ.get("AWS_REGION", "us-east-1"),
    }
    return {
        name: FunctionConfig(
            name=name,
            handler=WORKER_HANDLER if name == WORKER_FUNCTION else HTTP_HANDLER,
            memory_mb=spec.memory_mb,
            timeout_s=spec.timeout_s,
            max_environments=spec.local_environments,
            environment={
                **shared,
                **((worker or {}) if name == WORKER_FUNCTION else {}),
                variables.FUNCTION: name,
            },
        )
        for name, spec in declaration.functions.items()
    }


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise StackError(
            f"cannot listen on {host}:{port}: {error.strerror}; pass --port with a free port "
            "(or --port 0 for any)"
        ) from None
    sock.listen(1024)
    sock.set_inheritable(False)
    return sock


def socket_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{host if ':' not in host else f'[{host}]'}:{port}"


async def serve(
    options: DevOptions, *, on_ready: Callable[[str, dict[str, float], list[str]], None]
) -> None:
    """Run the stack until interrupted; `on_ready(url, init_ms_by_function, notes)` once it
    serves (notes: a line each about other parts, such as the local GPU executor).

    Each part goes on the exit stack the moment it runs: the parts stop in the reverse of
    the order they started in, and a start that fails halfway stops exactly what had
    started (Ctrl-C included)."""
    import uvicorn

    declaration = load_declaration(options.config)
    _require_artifacts(declaration, options.config)
    project_root = options.config.resolve().parent
    async with contextlib.AsyncExitStack() as stack:
        sock = stack.enter_context(bind(options.host, options.port))
        # The Invoke API has no keys: loopback only, whatever --host says.
        lambda_sock = stack.enter_context(bind("127.0.0.1", 0))
        secure_state_dir(options.state_dir)
        # Who holds it may use the stack's own services (loopback.py); kept in stack.json only.
        token = new_token()
        aws = _start_aws(stack, token)
        resources, keys = await _job_resources_and_keys(declaration, options, aws, token)
        # The GPU layer's stand-in, before the functions: the worker gets its URL and token.
        executor = _start_gpu_executor(stack, declaration, options.config, project_root, token)
        configs = function_configs(
            declaration,
            options.config,
            function_environment(aws.endpoint_url, token),
            {**resources.environment(), variables.LOCAL_STACK: "1"},
            _worker_environment(options.state_dir, executor, token),
            socket_url(lambda_sock),
        )
        pools, init_ms = await _start_pools(stack, configs, cwd=project_root)
        notes = [await _gpu_executor_ready(executor, declaration)] if executor else []
        usage_file = UsageFile(options.state_dir)
        gateway = _gateway(declaration, keys, pools, token, usage_file.load())
        _start_usage_flusher(stack, usage_file, gateway)
        _start_pollers(stack, declaration, resources, pools[WORKER_FUNCTION], aws, token)
        _start_invoke_api(stack, pools, aws, token, lambda_sock)
        notes.extend(_start_scheduler(stack, declaration, pools))
        server = uvicorn.Server(
            uvicorn.Config(
                gateway,
                log_level="warning",
                lifespan="off",
                access_log=False,
                timeout_graceful_shutdown=5,
                **server_options(),
            )
        )
        url = socket_url(sock)
        _record_stack(
            stack,
            options.state_dir / "stack.json",
            url,
            aws.endpoint_url,
            socket_url(lambda_sock),
            pools,
            resources,
            executor,
            token=token,
        )
        on_ready(url, init_ms, notes)
        await server.serve(sockets=[sock])


def _require_artifacts(declaration: Declaration, source: Path) -> None:
    missing = missing_artifacts(declaration, source)
    if missing:
        raise StackError(
            f"{len(missing)} model artifact(s) missing, e.g. {missing[0]}; "
            "run `stratoserve models build` first"
        )


def _start_aws(stack: contextlib.AsyncExitStack, token: str) -> LocalAws:
    """moto, answering only the stack's own credentials (`token`)."""
    aws = LocalAws(token)
    try:
        aws.start()
    except LocalAwsError as error:
        raise StackError(str(error)) from None
    stack.callback(aws.stop)
    return aws


async def _job_resources_and_keys(
    declaration: Declaration, options: DevOptions, aws: LocalAws, token: str
) -> tuple[JobResources, GatewayKeys]:
    """The jobs' queues, tables and bucket in the fresh moto, then the keys: each key is
    registered in the job resources' tenant registry. Both live and die with moto."""
    try:
        resources = await asyncio.to_thread(
            create_job_resources,
            declaration,
            lambda service: aws_client(service, aws.endpoint_url, token),
        )
        keys = await asyncio.to_thread(
            restore_keys,
            declaration,
            aws.endpoint_url,
            options.state_dir,
            options.api_key,
            resources.tenants_table,
            token,
        )
    except (LocalAwsError, KeysError) as error:
        raise StackError(str(error)) from None
    return resources, keys


def _worker_environment(
    state: Path, executor: ExecutorProcess | None, token: str
) -> dict[str, str]:
    """What only the worker gets: as on AWS (infra_cdk's service stack), only the worker
    signs callbacks and calls the GPU layer."""
    environment = {variables.CALLBACK_SIGNING_KEY: callback_signing_key(state)}
    if executor is not None:
        environment[variables.GPU_EXECUTOR_URL] = executor.url
        environment[variables.GPU_EXECUTOR_TOKEN] = token
    return environment


async def _start_pools(
    stack: contextlib.AsyncExitStack, configs: dict[str, FunctionConfig], *, cwd: Path
) -> tuple[dict[str, FunctionPool], dict[str, float]]:
    """Each function's pool with one warm environment, before the first request (like
    provisioned concurrency of 1; later environments cold-start on demand); the pools and
    each function's init time."""
    pools = {name: FunctionPool(config, cwd=cwd) for name, config in configs.items()}
    stack.push_async_callback(close_all, pools)
    starting = [asyncio.ensure_future(pool.prestart(1)) for pool in pools.values()]
    try:
        started = await asyncio.gather(*starting)
    except BaseException:
        # One function failed to start: the others' starts are stopped before the pools
        # close, or an environment still starting would outlive them.
        await cancel_all(starting)
        raise
    init_ms = {
        name: environments[0].init_ms or 0.0
        for name, environments in zip(pools, started, strict=True)
    }
    return pools, init_ms


def _gateway(
    declaration: Declaration,
    keys: GatewayKeys,
    pools: dict[str, FunctionPool],
    token: str,
    restored: dict[str, Any],
) -> Gateway:
    """The gateway, with the usage and quota counters of the last run (`restored`)."""
    counters = {
        key: (float(start), int(used))
        for key, (start, used) in restored.get("counters", {}).items()
    }
    gateway = Gateway(
        routes=RouteTable.from_declaration(declaration),
        keys=keys,
        pools=pools,
        plans=plan_limits(declaration),
        limiter=UsageLimiter(counters=counters),
        meter=Meter(restored),
        token=token,
    )
    # Every key's quota is reported by `keys usage`, not only those used since start.
    gateway.quotas.update(keys.quota_owners(gateway.plans))
    return gateway


def _start_usage_flusher(
    stack: contextlib.AsyncExitStack, usage_file: UsageFile, gateway: Gateway
) -> None:
    """usage.json every USAGE_FLUSH_S, and once more on stop."""
    flushing = asyncio.create_task(_flush_usage(usage_file, gateway))

    async def stop() -> None:
        await cancel_all([flushing])
        usage_file.save(gateway.meter, gateway.limiter, gateway.quotas)

    stack.push_async_callback(stop)


def _start_pollers(
    stack: contextlib.AsyncExitStack,
    declaration: Declaration,
    resources: JobResources,
    worker: FunctionPool,
    aws: LocalAws,
    token: str,
) -> None:
    """The worker's two event sources, as the CDK app maps them: the jobs queue, and
    finished jobs' callbacks."""
    region = os.environ.get("AWS_REGION", "us-east-1")
    pollers = (
        EventSourcePoller(
            sqs=aws_client("sqs", aws.endpoint_url, token),
            queue_url=resources.queue_url,
            queue_arn=resources.queue_arn,
            pool=worker,
            batch_size=declaration.jobs.batch_size,
            batching_window_s=declaration.jobs.batching_window_s,
            region=region,
            pollers=declaration.functions[WORKER_FUNCTION].local_environments,
        ),
        EventSourcePoller(
            sqs=aws_client("sqs", aws.endpoint_url, token),
            queue_url=resources.callbacks_queue_url,
            queue_arn=resources.callbacks_queue_arn,
            pool=worker,
            batch_size=callback_queue.BATCH_SIZE,
            batching_window_s=0,
            region=region,
        ),
    )
    for poller in pollers:
        poller.start()
        stack.push_async_callback(poller.stop)


def _start_invoke_api(
    stack: contextlib.AsyncExitStack,
    pools: dict[str, FunctionPool],
    aws: LocalAws,
    token: str,
    sock: socket.socket,
) -> None:
    """Lambda's Invoke API (and the fault API) on `sock`."""
    endpoint = LambdaEndpoint(LambdaApi(pools, FaultsApi(aws), token=token), sock)
    endpoint.start()
    stack.push_async_callback(endpoint.stop)


def _start_scheduler(
    stack: contextlib.AsyncExitStack, declaration: Declaration, pools: dict[str, FunctionPool]
) -> list[str]:
    """The declared warm-ups and the stuck-jobs sweep, as EventBridge sends them; the
    banner's notes about them."""
    warmups = declared_warmups(declaration)
    scheduler = WarmupScheduler(warmups, functools.partial(_warm_up, pools))
    scheduler.start()
    stack.push_async_callback(scheduler.stop)
    return [
        *(_warmup_note(warmup) for warmup in warmups),
        _schedule_sweep(scheduler, declaration, pools[WORKER_FUNCTION]),
    ]


async def _warm_up(pools: dict[str, FunctionPool], function: str, event: Any) -> Any:
    """EventBridge's delivery of a warm-up: straight to the function, not through the
    gateway (no key, no usage, no request metrics); it waits for a free environment."""
    return (await pools[function].invoke(event)).result


def _schedule_sweep(
    scheduler: WarmupScheduler, declaration: Declaration, worker: FunctionPool
) -> str:
    """The stuck-jobs sweep on `jobs.sweep_schedule`, sent to the worker as the CDK app's
    rule sends it; the note says when."""
    expression = declaration.jobs.sweep_schedule
    try:
        schedule = parse_schedule(expression)
    except UnsupportedSchedule as error:
        return f"stuck-jobs sweep: {error}; reads still settle stuck jobs"
    scheduler.follow(schedule, functools.partial(_sweep, worker))
    return f"stuck-jobs sweep: worker, {expression} (UTC)"


async def _sweep(worker: FunctionPool) -> None:
    try:
        answer = (await worker.invoke(SWEEP_EVENT)).result
    except Exception as error:  # the next firing tries again
        logger.warning("stuck-jobs sweep failed: %s", error)
        return
    if isinstance(answer, dict) and answer.get("settled"):
        logger.warning("stuck-jobs sweep: %s job(s) failed, never to run", answer["settled"])


def _warmup_note(warmup: Warmup) -> str:
    repeats = f"{warmup.expression} (UTC)" if warmup.schedule else "at start only"
    environments = f"{warmup.concurrency} environment(s)"
    if warmup.declared_concurrency not in (None, warmup.concurrency):
        environments += f" (of {warmup.declared_concurrency}: local_environments bounds it)"
    return f"warm-up: {warmup.function}, {environments}, {repeats}"


def _start_gpu_executor(
    stack: contextlib.AsyncExitStack,
    declaration: Declaration,
    source: Path,
    cwd: Path,
    token: str,
) -> ExecutorProcess | None:
    """The local GPU executor where the declaration has a GPU layer (None where not)."""
    if declaration.gpu is None:
        return None
    try:
        executor = launch(
            source.resolve(),
            cwd=cwd,
            environment={variables.MODELS_DIR: str(models_dir(declaration, source))},
            token=token,
        )
    except (ExecutorError, OSError) as error:
        raise StackError(f"cannot start the local GPU executor: {error}") from None
    stack.push_async_callback(asyncio.to_thread, executor.stop)
    return executor


async def _gpu_executor_ready(executor: ExecutorProcess, declaration: Declaration) -> str:
    """Wait until the executor answers /health; the banner's line about it."""
    try:
        health = await asyncio.to_thread(executor.wait_ready)
    except ExecutorError as error:
        raise StackError(str(error)) from None
    app = declaration.gpu.app if declaration.gpu else ""
    return (
        f"GPU jobs (Modal app {app}, run locally on {health.get('provider')}): "
        f"{', '.join(health.get('models', []))} at {executor.url}"
    )


def plan_limits(declaration: Declaration) -> dict[str, PlanLimits]:
    return {
        name: PlanLimits(
            throttle=Throttle(rate=plan.rate, burst=plan.burst),
            quota=Quota(plan.quota.limit, plan.quota.period, plan.quota.offset)
            if plan.quota
            else None,
            route_throttles={
                route: Throttle(rate=limit.rate, burst=limit.burst)
                for route, limit in plan.throttles.items()
            },
        )
        for name, plan in declaration.plans.items()
    }


async def _flush_usage(usage_file: UsageFile, gateway: Gateway) -> None:
    while True:
        await asyncio.sleep(USAGE_FLUSH_S)
        usage_file.save(gateway.meter, gateway.limiter, gateway.quotas)


def callback_signing_key(state: Path) -> str:
    """The local stack's key for signing job callbacks, kept in the state directory (mode
    600) so tenants' callback secrets survive restarts."""
    import secrets

    path = state / "callback-signing-key"
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        key = ""
    if key:
        return key
    state.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(key)
    temporary.replace(path)
    return key


def _record_stack(
    stack: contextlib.AsyncExitStack,
    record: Path,
    url: str,
    aws_url: str,
    lambda_url: str,
    pools: dict[str, FunctionPool],
    resources: JobResources,
    executor: ExecutorProcess | None,
    *,
    token: str,
) -> None:
    """stack.json: where the running stack serves, for other commands; removed on stop."""
    secure_state_dir(record.parent)
    content = {
        "url": url,
        "aws_url": aws_url,
        "lambda_url": lambda_url,
        "jobs": resources.as_dict(),
        "pid": os.getpid(),
        "started_at": time.time(),
        "functions": sorted(pools),
        "token": token,
    }
    if executor is not None:
        content["gpu_executor"] = {"url": executor.url, "pid": executor.pid}
    # Created 600 (never readable by others, even for a moment); a leftover from a crash
    # is replaced, not reused with its old mode.
    temporary = record.with_suffix(f".{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(json.dumps(content, indent=2))
    temporary.replace(record)
    stack.callback(record.unlink, missing_ok=True)
