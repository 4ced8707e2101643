"""Every declared function (and the worker, declared or not): its `DeclaredFunction` with
the environment the runtime reads, its `WarmUp` where declared, and the layers the zip
functions carry.

Built into the scope it is given, the stack, rather than a construct of its own: the
functions, their warm-ups and the layers keep the construct paths, and so the logical ids,
they were first deployed with. A new logical id would replace each function, whose fixed
name would then block the deploy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from infra_cdk.constructs import pascal_case
from infra_cdk.constructs.declared_function import DeclaredFunction, Package, Rollout
from infra_cdk.constructs.function_layers import FunctionLayers
from infra_cdk.constructs.warm_up import WarmUp
from layers.recipes import ARCHITECTURES, LAMBDA_MODELS_DIR
from stratoserve.declaration import function_environment as env
from stratoserve.declaration.schema import (
    DEFAULT_WORKER,
    HTTP_HANDLER,
    WORKER_FUNCTION,
    WORKER_HANDLER,
)

if TYPE_CHECKING:
    from constructs import Construct

    from layers.builder import BuildReport
    from stratoserve.declaration import Declaration

DECLARATION_IN_CODE = "/var/task/stratoserve.toml"
"""Where the code zip (and the image) puts the declaration."""


@dataclass(frozen=True)
class FunctionEnvironment:
    """What the functions are told (the contract of stratoserve/declaration/
    function_environment.py): every one the jobs' table, bucket and queue; the HTTP
    functions the tenant registry; the worker alone what signs callbacks and spawns Modal's
    calls, since nothing else reads either."""

    service: str
    metrics_namespace: str
    jobs_table: str
    jobs_bucket: str
    jobs_queue_url: str
    tenants_table: str
    callbacks_queue_url: str
    callback_secret_arn: str
    modal_secret_arn: str | None

    def of(self, name: str) -> dict[str, str]:
        environment = {
            env.CONFIG: DECLARATION_IN_CODE,
            env.MODELS_DIR: LAMBDA_MODELS_DIR,
            env.JOBS_TABLE: self.jobs_table,
            env.JOBS_BUCKET: self.jobs_bucket,
            env.JOBS_QUEUE_URL: self.jobs_queue_url,
            env.POWERTOOLS_SERVICE_NAME: self.service,
            env.POWERTOOLS_METRICS_NAMESPACE: self.metrics_namespace,
            env.FUNCTION: name,
        }
        if name == WORKER_FUNCTION:
            environment[env.CALLBACK_SECRET_ARN] = self.callback_secret_arn
            environment[env.CALLBACKS_QUEUE_URL] = self.callbacks_queue_url
            if self.modal_secret_arn is not None:
                environment[env.MODAL_SECRET_ARN] = self.modal_secret_arn
        else:
            environment[env.TENANTS_TABLE] = self.tenants_table
        return environment


def declare_functions(
    scope: Construct,
    *,
    declaration: Declaration,
    build: BuildReport,
    prefix: str,
    environment: FunctionEnvironment,
    rollout: Rollout,
) -> dict[str, DeclaredFunction]:
    """The functions by declared name, in the build report's order."""
    # Only what a zip function carries: an image unpacks its layers itself.
    carried = {
        zip_path
        for report in build.functions
        if report.package == "zip"
        for zip_path in report.layer_zips
    }
    layers = FunctionLayers(
        scope,
        "Layers",
        builds=[layer for layer in build.layers if layer.zip in carried],
        project=prefix,
    )
    specs = dict(declaration.functions)
    specs.setdefault(WORKER_FUNCTION, DEFAULT_WORKER)
    functions: dict[str, DeclaredFunction] = {}
    for report in build.functions:
        name = report.name
        spec = specs[name]
        arch = ARCHITECTURES[spec.architecture]
        function = DeclaredFunction(
            scope,
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
            environment=environment.of(name),
            rollout=rollout,
        )
        functions[name] = function
        if spec.warmup is not None:
            WarmUp(
                scope,
                pascal_case(name) + "WarmUp",
                function=function.function,
                function_name=f"{prefix}-{name}",
                alias=function.alias,
                spec=spec.warmup,
            )
    return functions
