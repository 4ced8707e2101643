"""Where a job runs: on the CPU worker (Lambda) or on the GPU layer (Modal).

The declaration's `routing.<model>` decides: a job at or over a GPU threshold (inputs, or
bytes of JSON) goes to the GPU when the tenant's plan has gpu_jobs; a plan without it runs
the job on the CPU worker, or is refused, as `without_gpu` says. Decided once, when the job
is submitted, and stored on the job (its `backend`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from functions.runtime.jobs import BACKEND_LAMBDA, BACKEND_MODAL

if TYPE_CHECKING:
    from stratoserve.declaration import Declaration, PlanSpec


class RouteRefused(Exception):
    """The job cannot run anywhere it may go; the message says what the caller can do."""


class JobTooLarge(RouteRefused):
    """More inputs than any backend the job may go to takes: split it."""


class GpuJobsNotInPlan(RouteRefused):
    """The job needs the GPU, the tenant's plan has no GPU jobs, and the declaration says
    to refuse rather than run it on the CPU."""


@dataclass(frozen=True)
class Route:
    backend: str


def route_job(
    declaration: Declaration,
    model: str,
    *,
    plan: PlanSpec | None,
    plan_name: str | None,
    inputs: int,
    payload_bytes: int,
) -> Route:
    """The backend for a job of `inputs` inputs weighing `payload_bytes` of JSON, from a
    tenant on `plan` (None: no plan limits the caller)."""
    routing = declaration.routing_for(model)
    if declaration.runs_on_gpu(model) and routing.wants_gpu(inputs, payload_bytes):
        if plan is None or plan.gpu_jobs:
            if inputs > routing.gpu_max_inputs:
                raise JobTooLarge(
                    f"{inputs} inputs is more than a GPU job of {model} may carry "
                    f"({routing.gpu_max_inputs}, routing.{model}.gpu_max_inputs); split it into "
                    "several jobs",
                )
            return Route(BACKEND_MODAL)
        if routing.without_gpu == "refuse":
            raise GpuJobsNotInPlan(
                f"plan {plan_name} does not include GPU jobs, and a job of {model} this big "
                f"({_threshold(declaration, model)}) runs on the GPU; send smaller jobs",
            )
    if inputs > routing.job_max_inputs:
        bigger = ""
        if declaration.runs_on_gpu(model) and routing.gpu_min_inputs is not None:
            bigger = f"; plans with GPU jobs may send up to {routing.gpu_max_inputs}"
        raise JobTooLarge(
            f"{inputs} inputs is more than a job of {model} may carry ({routing.job_max_inputs}, "
            f"routing.{model}.job_max_inputs){bigger}; split it into several jobs",
        )
    return Route(BACKEND_LAMBDA)


def _threshold(declaration: Declaration, model: str) -> str:
    routing = declaration.routing_for(model)
    parts = []
    if routing.gpu_min_inputs is not None:
        parts.append(f"{routing.gpu_min_inputs} inputs or more")
    if routing.gpu_min_bytes is not None:
        parts.append(f"{routing.gpu_min_bytes} bytes of inputs or more")
    return " or ".join(parts)
