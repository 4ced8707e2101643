"""`stratoserve jobs`: the running local stack's jobs, as an operator sees them."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from rich.table import Table

from stratoserve.cli._common import (
    UsageError,
    config_option,
    console,
    json_option,
    positive,
    tenant_name,
)
from stratoserve.cli.context import NO_LOCAL_STACK, aws_errors, show_help

if TYPE_CHECKING:
    import argparse

    from functions.runtime.job_store import JobStore
    from functions.runtime.jobs import Job
    from stratoserve.cli._common import Subcommands
    from stratoserve.cli.context import CliContext
    from stratoserve.jobs import JobAdmin


def add_parser(commands: Subcommands) -> None:
    jobs = commands.add_parser(
        "jobs",
        help="the running local stack's jobs: list, show, redrive the dead-letter queue",
        description="Jobs in the job store of the running `stratoserve dev` (DynamoDB and "
        "SQS in its moto server), read with the same boto3 calls as on AWS.",
    )
    jobs.set_defaults(command=show_help(jobs))
    actions = jobs.add_subparsers(title="commands", metavar="COMMAND")
    listing = actions.add_parser("list", help="jobs, oldest first")
    listing.add_argument(
        "--tenant", type=tenant_name, help="only this tenant's jobs (every id the name has had)"
    )
    listing.add_argument(
        "--status",
        choices=["queued", "running", "succeeded", "failed", "cancelled"],
        help="only jobs in this status",
    )
    listing.add_argument("--limit", type=positive, default=50, help="the newest N (default 50)")
    listing.set_defaults(command=list_command)
    show = actions.add_parser("show", help="one job, with its error or result size")
    show.add_argument("job_id", metavar="ID")
    show.add_argument("--tenant", type=tenant_name, help="the job's tenant (faster lookup)")
    show.set_defaults(command=show_command)
    redrive = actions.add_parser(
        "redrive",
        help="move the dead-letter queue's jobs back to the jobs queue (each job queued again)",
    )
    redrive.set_defaults(command=redrive_command)
    secret = actions.add_parser(
        "callback-secret",
        help="a tenant's secret for verifying job callbacks (x-stratoserve-signature)",
    )
    secret.add_argument("--tenant", required=True, type=tenant_name)
    secret.add_argument(
        "--version",
        type=positive,
        help="an earlier version (jobs submitted before a rotation); default: the current one",
    )
    secret.set_defaults(command=callback_secret_command)
    for action in (listing, show, redrive, secret):
        action.set_defaults(command=aws_errors(action.get_default("command")))
        config_option(action)
        action.set_defaults(target="local")
        json_option(action)


def job_admin(context: CliContext) -> JobAdmin:
    from stratoserve.jobs import JobAdmin, JobResources

    declaration = context.declaration
    stack = context.local_stack()
    if stack.jobs is None:
        raise UsageError(NO_LOCAL_STACK)
    return JobAdmin.connect(declaration, JobResources(**stack.jobs), stack.client)


def tenant_names(admin: JobAdmin) -> dict[str, str]:
    """Tenant id -> name, from the tenant registry (jobs are stored by id)."""
    return {entry.tenant_id: entry.tenant for entry in admin.tenants.entries()}


def job_row(job: Job, store: JobStore, names: dict[str, str]) -> dict[str, Any]:
    """A job as the API shows it, less the result itself, plus the operator's fields."""
    from functions.runtime.job_view import job_view

    view = job_view(job, store)
    view.pop("result", None)
    view["tenant"] = names.get(job.tenant, job.tenant)
    view["tenant_id"] = job.tenant
    view["correlation_id"] = job.correlation_id
    if job.status == "succeeded":
        view["result_bytes"] = job.result_bytes or len(job.result or "")
        view["result_in"] = "s3" if job.result_key else "record"
    return view


def list_command(context: CliContext, arguments: argparse.Namespace) -> int:
    from functions.runtime.jobs import JobStatus

    admin = job_admin(context)
    status = JobStatus(arguments.status) if arguments.status else None
    jobs = admin.jobs(arguments.tenant, status)[-arguments.limit :]
    names = tenant_names(admin)
    if arguments.json:
        console.print_json(data=[job_row(job, admin.store, names) for job in jobs])
        return 0
    if not jobs:
        console.print("no jobs", highlight=False)
        return 0
    table = Table(
        "job id", "tenant", "model", "status", "backend", "inputs", "attempts", "created", "error"
    )
    for job in jobs:
        row = job_row(job, admin.store, names)
        table.add_row(
            job.job_id,
            row["tenant"],
            f"{job.model}:{job.version}",
            str(job.status),
            job.backend,
            str(job.inputs),
            str(job.attempts),
            row["created_at"],
            (job.error or "")[:60],
        )
    console.print(table)
    return 0


def show_command(context: CliContext, arguments: argparse.Namespace) -> int:
    admin = job_admin(context)
    job = admin.find(arguments.job_id, arguments.tenant)
    if job is None:
        raise UsageError(f"no job {arguments.job_id}")
    console.print_json(data=job_row(job, admin.store, tenant_names(admin)))
    return 0


def redrive_command(context: CliContext, arguments: argparse.Namespace) -> int:
    admin = job_admin(context)
    outcome = admin.redrive()
    if arguments.json:
        console.print_json(data=asdict(outcome))
        return 0
    console.print(
        f"requeued {len(outcome.requeued)} job(s) from the dead-letter queue"
        + (
            f"; dropped {len(outcome.already_finished)} already finished"
            if outcome.already_finished
            else ""
        )
        + (f"; dropped {len(outcome.expired)} expired" if outcome.expired else "")
        + (f"; left {outcome.not_jobs} message(s) that are not jobs" if outcome.not_jobs else ""),
        highlight=False,
    )
    for job_id in outcome.requeued:
        console.print(f"  {job_id}", highlight=False)
    return 0


def callback_secret_command(context: CliContext, arguments: argparse.Namespace) -> int:
    """The tenant's callback secret, for its current tenant id (kept in keys.json: no running
    stack needed) and its current secret version, or an earlier `--version`."""
    from functions.runtime.callbacks import SIGNATURE_HEADER, tenant_secret
    from stratoserve.keys import LocalKeyStore
    from stratoserve.local.stack import callback_signing_key

    _ = context.declaration  # a bad declaration is refused here too, as by every command
    active = [
        key
        for key in LocalKeyStore(context.state).load()
        if key.tenant == arguments.tenant and key.enabled
    ]
    if not active:
        raise UsageError(
            f"tenant {arguments.tenant} has no active key: its callbacks are signed no more"
        )
    current = active[-1]
    tenant_id = current.tenant_id or current.tenant  # a key kept from before the registry
    version = arguments.version or current.secret_version
    if version > current.secret_version:
        raise UsageError(
            f"tenant {arguments.tenant} is at callback secret version {current.secret_version}"
        )
    secret = tenant_secret(callback_signing_key(context.state).encode(), tenant_id, version)
    if arguments.json:
        console.print_json(
            data={
                "tenant": arguments.tenant,
                "tenant_id": tenant_id,
                "secret_version": version,
                "callback_secret": secret,
            }
        )
    else:
        # Shown on request, to the operator: the tenant verifies callbacks with it.
        console.print(
            f"callback secret of tenant {arguments.tenant} ({tenant_id}), version {version} "
            f"(verifies {SIGNATURE_HEADER}): [bold]{secret}[/]",
            highlight=False,
        )
    return 0
