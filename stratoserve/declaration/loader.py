"""The one loader of stratoserve.toml: the CLI, the local stack, the Lambda runtime and the
CDK app all read the declaration through `load_declaration`.

It must stay light: importing it pulls in pydantic and the standard library only (a test
guards that boto3, onnxruntime, fastapi and aws_cdk stay out), because it runs on every
Lambda cold start.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from stratoserve.declaration import function_environment as variables
from stratoserve.declaration.schema import (
    API_FUNCTION,
    CALLBACKS_MAX_CONCURRENCY,
    DEFAULT_WORKER,
    INTEGRATION_TIMEOUT_S,
    QUOTA_MAX_OFFSET,
    RESERVED_CONCURRENCY_DEFAULT,
    RESERVED_FUNCTIONS,
    STAGES_PER_ACCOUNT,
    UNRESERVED_CONCURRENCY,
    WORKER_FUNCTION,
    Declaration,
    FunctionSpec,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from pydantic_core import ErrorDetails

DEFAULT_FILE = "stratoserve.toml"


class DeclarationError(Exception):
    """A declaration that cannot be used; `problems` holds one line per problem."""

    def __init__(self, source: Path, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {problem}" for problem in problems))


def default_path() -> Path:
    return Path(os.environ.get(variables.CONFIG, DEFAULT_FILE))


def load_declaration(path: Path | str | None = None) -> Declaration:
    source = Path(path) if path is not None else default_path()
    try:
        raw = tomllib.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DeclarationError(
            source, [f"file not found (pass --config or set {variables.CONFIG})"]
        ) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise DeclarationError(source, [f"not valid TOML: {error}"]) from None
    except OSError as error:
        raise DeclarationError(source, [f"cannot read it: {error.strerror or error}"]) from None
    try:
        declaration = Declaration.model_validate(raw)
    except ValidationError as error:
        raise DeclarationError(source, [_describe(detail) for detail in error.errors()]) from None
    problems = list(_cross_reference_problems(declaration))
    if problems:
        raise DeclarationError(source, problems)
    declaration = _with_default_functions(declaration)
    problems = list(_concurrency_problems(declaration))
    if problems:
        raise DeclarationError(source, problems)
    return declaration


def models_dir(declaration: Declaration, source: Path) -> Path:
    """Where artifacts are read from: $STRATOSERVE_MODELS_DIR on Lambda, else beside the file."""
    override = os.environ.get(variables.MODELS_DIR)
    if override:
        return Path(override)
    return (source.parent / declaration.project.models_dir).resolve()


def _with_default_functions(declaration: Declaration) -> Declaration:
    """Give every model that no function claims a function of its own, named after it, so a
    cold start loads only that model; and make sure the `api` and `worker` functions exist."""
    functions = dict(declaration.functions)
    claimed = {model for function in functions.values() for model in function.models}
    for model in declaration.models:
        if model not in claimed:
            functions[model] = FunctionSpec(models=[model])
    functions.setdefault(API_FUNCTION, FunctionSpec(memory_mb=512))
    functions.setdefault(WORKER_FUNCTION, DEFAULT_WORKER)
    share = _reserved_share(declaration.project.account_concurrency, len(functions))
    if share is not None:
        functions = {
            name: function
            if function.reserved_concurrency is not None
            else function.model_copy(
                update={
                    "reserved_concurrency": max(share, _least_reserved(name, function, declaration))
                }
            )
            for name, function in functions.items()
        }
    return declaration.model_copy(update={"functions": functions})


def _reserved_share(account_concurrency: int, functions: int) -> int | None:
    """A function's default reserved concurrency: an even share of what the account can
    reserve, leaving room for STAGES_PER_ACCOUNT stages; None when that is nothing (an
    account of 10 executions can reserve none: the functions share the unreserved pool)."""
    reservable = account_concurrency - UNRESERVED_CONCURRENCY
    share = min(RESERVED_CONCURRENCY_DEFAULT, reservable // (STAGES_PER_ACCOUNT * functions))
    return share if share >= 1 else None


def _least_reserved(name: str, function: FunctionSpec, declaration: Declaration) -> int:
    """What the function's other settings need reserved: its provisioned concurrency (and
    scaling's most), its warm-up's concurrency; for the worker, its two event source
    mappings' (the jobs queue's and the callbacks queue's)."""
    needs = [
        function.provisioned_concurrency or 0,
        function.warmup.concurrency if function.warmup else 0,
    ]
    if function.scaling is not None:
        needs += [
            function.scaling.max,
            *(scheduled.max for scheduled in function.scaling.schedules),
        ]
    if name == WORKER_FUNCTION:
        needs.append((declaration.jobs.max_concurrency or 2) + CALLBACKS_MAX_CONCURRENCY)
    return max(needs)


def _cross_reference_problems(declaration: Declaration) -> Iterator[str]:
    models = declaration.models
    for api_version, spec in declaration.api.items():
        for model, version in spec.models.items():
            where = f"api.{api_version}.models.{model}"
            if model not in models:
                yield f"{where}: unknown model{_suggest(model, models)}"
            elif version not in models[model].versions:
                known = ", ".join(sorted(models[model].versions))
                yield f"{where}: model {model} has no version {version} (declared: {known})"
        if spec.sunset and not spec.deprecated:
            yield f"api.{api_version}.sunset: needs api.{api_version}.deprecated as well"
        if spec.sunset and spec.deprecated and spec.sunset < spec.deprecated:
            yield f"api.{api_version}.sunset: must not be before deprecated ({spec.deprecated})"

    claimed = {model for function in declaration.functions.values() for model in function.models}
    for model in models:
        if model in RESERVED_FUNCTIONS:
            yield f"models.{model}: the name {model} is reserved for the {model} function"
        elif model not in claimed and model in declaration.functions:
            # Its default function would take this name, which a declared function holds.
            yield (
                f"models.{model}: no function serves it and functions.{model} serves other "
                f"models; add {model} to a function's models"
            )

    owner: dict[str, str] = {}
    for name, function in declaration.functions.items():
        if name == API_FUNCTION and function.models:
            yield f"functions.{API_FUNCTION}.models: the api function serves no models"
        if name == WORKER_FUNCTION and function.models:
            yield (
                f"functions.{WORKER_FUNCTION}.models: the worker runs every model's jobs; "
                "leave models out"
            )
        for model in function.models:
            if model not in models:
                yield f"functions.{name}.models: unknown model {model}{_suggest(model, models)}"
            elif model in owner:
                yield (
                    f"functions.{name}.models: {model} is already served by "
                    f"functions.{owner[model]}; a model has one function"
                )
            else:
                owner[model] = name
        if function.snapstart and function.provisioned_concurrency:
            yield (
                f"functions.{name}: snapstart and provisioned_concurrency are mutually "
                "exclusive (AWS rejects both on one function); keep one"
            )
        yield from _function_problems(name, function, declaration.project.name)

    for name, model_spec in models.items():
        if model_spec.task != "embed" and "max_text_chars" in model_spec.model_fields_set:
            yield f"models.{name}.max_text_chars: only for text models (task embed)"

    for model in declaration.routing:
        if model not in models:
            yield f"routing.{model}: unknown model{_suggest(model, models)}"

    yield from _plan_problems(declaration)
    yield from _jobs_problems(declaration)
    yield from _gpu_problems(declaration)

    artifacts: dict[str, str] = {}
    for name, model_spec in models.items():
        for version, version_spec in model_spec.versions.items():
            where = f"models.{name}.versions.{version}"
            if model_spec.task == "embed" and version_spec.tokenizer is None:
                yield f"{where}.tokenizer: an embed model needs one"
            for field, path in (
                ("artifact", version_spec.artifact),
                ("tokenizer", version_spec.tokenizer),
            ):
                if path is None:
                    continue
                if path in artifacts:
                    yield f"{where}.{field}: {path} is also {artifacts[path]}; give each its own"
                else:
                    artifacts[path] = f"{where}.{field}"


FUNCTION_NAME_MAX = 64
"""Lambda's limit on a function's name: <project>-<stage>-<function> on AWS."""
LONGEST_STAGE = "-dev"


def _concurrency_problems(declaration: Declaration) -> Iterator[str]:
    """Reserved concurrency that the account cannot give (AWS would refuse the deploy), and
    an event source mapping that could run more workers than the worker may."""
    reserved = {
        name: function.reserved_concurrency
        for name, function in declaration.functions.items()
        if function.reserved_concurrency is not None
    }
    account = declaration.project.account_concurrency
    reservable = account - UNRESERVED_CONCURRENCY
    if sum(reserved.values()) > max(reservable, 0):
        shares = ", ".join(f"{name} {count}" for name, count in sorted(reserved.items()))
        yield (
            f"project.account_concurrency: the functions reserve {sum(reserved.values())} "
            f"executions ({shares}), over the {max(reservable, 0)} an account of {account} can "
            f"reserve (AWS keeps {UNRESERVED_CONCURRENCY} unreserved); lower "
            "functions.<name>.reserved_concurrency, or raise the account's quota and "
            "project.account_concurrency with it"
        )
    worker = declaration.functions.get(WORKER_FUNCTION, DEFAULT_WORKER).reserved_concurrency
    least = 2 + CALLBACKS_MAX_CONCURRENCY
    if worker is not None and worker < least:
        yield (
            f"functions.{WORKER_FUNCTION}.reserved_concurrency: must be at least {least}, "
            "what its event sources run at the least (2 for the jobs queue, "
            f"{CALLBACKS_MAX_CONCURRENCY} for the callbacks queue)"
        )
    elif (
        worker is not None
        and declaration.jobs_max_concurrency() > worker - CALLBACKS_MAX_CONCURRENCY
    ):
        yield (
            f"jobs.max_concurrency: must be at most functions.{WORKER_FUNCTION}."
            f"reserved_concurrency ({worker}) less the callbacks queue's "
            f"{CALLBACKS_MAX_CONCURRENCY}, or the queues' deliveries are throttled"
        )


def _function_problems(name: str, function: FunctionSpec, project: str) -> Iterator[str]:
    """Deploy settings that AWS would refuse together, named before `cdk deploy` does."""
    where = f"functions.{name}"
    deployed = f"{project}{LONGEST_STAGE}-{name}"
    if len(deployed) > FUNCTION_NAME_MAX:
        yield (
            f"{where}: deployed as {deployed}, {len(deployed)} characters: over Lambda's "
            f"{FUNCTION_NAME_MAX}; shorten the function's or the project's name"
        )
    if name != WORKER_FUNCTION and function.timeout_s > INTEGRATION_TIMEOUT_S:
        yield (
            f"{where}.timeout_s: at most {INTEGRATION_TIMEOUT_S} for a function behind API "
            "Gateway (its integration timeout); bigger requests become jobs"
        )
    schedules = [(f"{where}.warmup.schedule", function.warmup.schedule)] if function.warmup else []
    if function.scaling is not None:
        schedules += [
            (f"{where}.scaling.schedules[{index}].schedule", scheduled.schedule)
            for index, scheduled in enumerate(function.scaling.schedules)
        ]
    for key, schedule in schedules:
        if schedule.startswith("cron("):
            fields = schedule[5:-1].split()
            if (fields[2] == "?") == (fields[4] == "?"):
                yield (
                    f"{key}: one of day-of-month and day-of-week must be ? (and only one), "
                    'as AWS requires: "cron(0 7 ? * MON-FRI *)"'
                )
    if function.snapstart and function.package == "image":
        yield f'{where}.snapstart: SnapStart needs package = "zip" (not for container images)'
    provisioned = function.provisioned_concurrency
    reserved = function.reserved_concurrency
    if reserved is not None and provisioned is not None and provisioned > reserved:
        yield (
            f"{where}.provisioned_concurrency: {provisioned} is more than "
            f"reserved_concurrency ({reserved})"
        )
    if function.warmup and reserved is not None and function.warmup.concurrency > reserved:
        yield (
            f"{where}.warmup.concurrency: {function.warmup.concurrency} is more than "
            f"reserved_concurrency ({reserved})"
        )
    if function.scaling and reserved is not None and function.scaling.max > reserved:
        yield (
            f"{where}.scaling.max: {function.scaling.max} is more than "
            f"reserved_concurrency ({reserved})"
        )
    scaling = function.scaling
    if scaling is None:
        return
    if provisioned is None:
        yield f"{where}.scaling: scales provisioned concurrency; declare provisioned_concurrency"
    elif scaling.max < provisioned:
        yield f"{where}.scaling.max: must be at least provisioned_concurrency ({provisioned})"
    for index, scheduled in enumerate(scaling.schedules):
        if scheduled.min > scheduled.max:
            yield f"{where}.scaling.schedules[{index}].min: must not be more than max"


def _plan_problems(declaration: Declaration) -> Iterator[str]:
    resources = declaration.resource_paths()
    models = declaration.models
    for name, plan in declaration.plans.items():
        for model in plan.models:
            if model != "*" and model not in models:
                yield f"plans.{name}.models: unknown model {model}{_suggest(model, models)}"
        for route in plan.throttles:
            if route not in resources:
                yield f"plans.{name}.throttles: unknown route {route}{_suggest(route, resources)}"
        if plan.quota and plan.quota.offset > QUOTA_MAX_OFFSET[plan.quota.period]:
            most = QUOTA_MAX_OFFSET[plan.quota.period]
            allowed = f"0..{most}" if most else "0"
            yield f"plans.{name}.quota.offset: must be {allowed} for a {plan.quota.period} period"


def _jobs_problems(declaration: Declaration) -> Iterator[str]:
    jobs = declaration.jobs
    if jobs.batch_size > 10 and jobs.batching_window_s < 1:
        yield "jobs.batching_window_s: must be at least 1 when batch_size is over 10 (AWS's rule)"
    timeout = declaration.functions.get(WORKER_FUNCTION, DEFAULT_WORKER).timeout_s
    if jobs.visibility_timeout_s is not None and jobs.visibility_timeout_s < 6 * timeout:
        yield (
            f"jobs.visibility_timeout_s: must be at least {6 * timeout} (6x functions.worker."
            "timeout_s), or a slow batch is delivered twice"
        )
    for model, routing in declaration.routing.items():
        if routing.job_max_inputs < routing.inline_max_inputs:
            yield (
                f"routing.{model}.job_max_inputs: must be at least inline_max_inputs "
                f"({routing.inline_max_inputs})"
            )


def _gpu_problems(declaration: Declaration) -> Iterator[str]:
    gpu = declaration.gpu
    models = declaration.models
    for model in gpu.models if gpu else []:
        if model not in models:
            yield f"gpu.models: unknown model {model}{_suggest(model, models)}"
    for model, routing in declaration.routing.items():
        for key in ("gpu_min_inputs", "gpu_min_bytes"):
            if getattr(routing, key) is not None and not declaration.runs_on_gpu(model):
                yield (
                    f"routing.{model}.{key}: {model} is not in gpu.models (declare a [gpu] "
                    "table that serves it, or leave the GPU thresholds out)"
                )
        if routing.gpu_min_inputs is not None and routing.gpu_min_inputs > routing.gpu_max_inputs:
            yield (
                f"routing.{model}.gpu_min_inputs: must be at most gpu_max_inputs "
                f"({routing.gpu_max_inputs})"
            )
        if (
            routing.gpu_min_inputs is not None
            and routing.gpu_min_inputs > routing.job_max_inputs + 1
        ):
            yield (
                f"routing.{model}.gpu_min_inputs: must be at most job_max_inputs + 1 "
                f"({routing.job_max_inputs + 1}), or jobs of the sizes between have nowhere to run"
            )
    if gpu and gpu.deadline_s < gpu.timeout_s * (gpu.retries + 1):
        yield (
            f"gpu.deadline_s: must be at least gpu.timeout_s x (gpu.retries + 1) "
            f"({gpu.timeout_s * (gpu.retries + 1)}), or a call that Modal still allows is "
            "given up"
        )


def _describe(detail: ErrorDetails) -> str:
    # pydantic marks a bad table key with a trailing "[key]"; the key path already names it.
    loc = tuple(part for part in detail["loc"] if part != "[key]")
    where = ".".join(str(part) for part in loc) or "(top level)"
    kind = detail["type"]
    context: dict[str, Any] = dict(detail.get("ctx") or {})
    if kind == "missing":
        return f"{where}: is required"
    if kind == "extra_forbidden":
        parent, _, key = where.rpartition(".")
        allowed = _fields_at(parent)
        return f"{where}: unknown key{_suggest(key, allowed)}"
    if kind == "literal_error":
        return f"{where}: must be {_or_list(str(context.get('expected', '')))}"
    if kind == "string_pattern_mismatch":
        return f"{where}: {_pattern_hint(loc)}"
    if kind in _BOUNDS:
        limit = next(context[bound] for bound in ("ge", "gt", "le", "lt") if bound in context)
        return f"{where}: must be {_BOUNDS[kind]} {limit}"
    if kind == "too_short":
        return f"{where}: must not be empty"
    return f"{where}: {detail['msg'][:1].lower()}{detail['msg'][1:]}"


_BOUNDS = {
    "greater_than_equal": "at least",
    "greater_than": "greater than",
    "less_than_equal": "at most",
    "less_than": "less than",
}


def _pattern_hint(loc: tuple[int | str, ...]) -> str:
    section = str(loc[0]) if loc else ""
    if section == "api" and len(loc) == 2:
        return "API versions are named v1, v2, ..."
    if loc == ("gpu", "gpu"):
        return (
            "must be one of Modal's GPU types (T4, L4, A10G, A100, A100-40GB, A100-80GB, "
            'L40S, H100, H200, B200), optionally with a count such as "H100:2"'
        )
    if "versions" in loc or (section == "api" and "models" in loc):
        return 'model versions are whole numbers written as strings, like "1"'
    return "names are lowercase letters, digits, '-' or '_', starting with a letter"


def _or_list(expected: str) -> str:
    options = [option.strip().strip("'") for option in expected.replace(" or ", ",").split(",")]
    options = [option for option in options if option]
    if len(options) < 2:
        return expected
    return ", ".join(options[:-1]) + " or " + options[-1]


def _fields_at(dotted: str) -> list[str]:
    """The keys allowed in the table at `dotted` (best effort, for 'did you mean')."""
    model: Any = Declaration
    for part in dotted.split(".") if dotted else []:
        fields = getattr(model, "model_fields", None)
        if fields is not None:
            if part not in fields:
                return []
            model = fields[part].annotation
        else:
            # A table of named entries (models.<name>): step into its value type.
            args = getattr(model, "__args__", ())
            if not args:
                return []
            model = args[-1]
    fields = getattr(model, "model_fields", None)
    return list(fields) if fields else []


def _suggest(word: str, options: Any) -> str:
    matches = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {matches[0]}?)" if matches else ""
