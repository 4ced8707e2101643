"""`stratoserve keys`: tenants' API keys on usage plans, on the local stack or on AWS."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

from rich.table import Table

from stratoserve.cli._common import config_option, console, json_option, tenant_name
from stratoserve.cli.context import aws_errors, show_help

if TYPE_CHECKING:
    import argparse

    from stratoserve.cli._common import Subcommands
    from stratoserve.cli.context import CliContext
    from stratoserve.keys import KeyService, LocalKeyStore


def add_parser(commands: Subcommands) -> None:
    keys = commands.add_parser(
        "keys",
        help="tenants' API keys on usage plans, locally or on AWS",
        description="Create, list and revoke tenants' API keys with API Gateway's own API, "
        "each registered in the tenant registry the functions read: against the running "
        "`stratoserve dev` (--target local, the default while it runs) or a deployed stack "
        "(--target aws).",
    )
    keys.set_defaults(command=show_help(keys))
    actions = keys.add_subparsers(title="commands", metavar="COMMAND")
    create = actions.add_parser("create", help="a key for a tenant on a plan (shown once)")
    create.add_argument("--tenant", required=True, type=tenant_name)
    create.add_argument("--plan", required=True)
    create.set_defaults(command=create_command)
    listing = actions.add_parser("list", help="every tenant's keys (never their values)")
    listing.set_defaults(command=list_command)
    revoke = actions.add_parser("revoke", help="disable a tenant's key: refused at once")
    revoke.add_argument("--tenant", required=True, type=tenant_name)
    revoke.set_defaults(command=revoke_command)
    rotate = actions.add_parser(
        "rotate", help="a new key for a tenant (shown once), its old key revoked; same tenant"
    )
    rotate.add_argument("--tenant", required=True, type=tenant_name)
    rotate.set_defaults(command=rotate_command)
    rotate_secret = actions.add_parser(
        "rotate-secret",
        help="a new version of a tenant's callback secret (jobs submitted from now on)",
    )
    rotate_secret.add_argument("--tenant", required=True, type=tenant_name)
    rotate_secret.set_defaults(command=rotate_secret_command)
    migrate = actions.add_parser(
        "migrate",
        help="register keys made before the tenant registry (each keeps its jobs and secret)",
    )
    migrate.set_defaults(command=migrate_command)
    usage = actions.add_parser(
        "usage",
        help="requests per tenant; locally also model compute time and quota use",
    )
    usage.add_argument("--tenant", type=tenant_name)
    usage.set_defaults(command=usage_command)
    for action in (create, listing, revoke, rotate, rotate_secret, migrate, usage):
        action.set_defaults(command=aws_errors(action.get_default("command")))
        config_option(action)
        action.add_argument(
            "--target",
            choices=["local", "aws"],
            default=None,
            help="local: the running `stratoserve dev` (default); aws: the deployed stack, "
            "with your AWS credentials",
        )
        action.add_argument(
            "--stage",
            choices=["dev", "prod"],
            default="prod",
            help="with --target aws: the deployed stage (`cdk deploy -c stage=...`; default prod)",
        )
        json_option(action)


def key_service(context: CliContext) -> tuple[KeyService, LocalKeyStore | None]:
    """The key service for the chosen target, and the local key store when local."""
    from stratoserve.keys import KeyService, LocalKeyStore
    from stratoserve.tenants import TenantRegistry, table_name

    project = context.declaration.project.name
    if context.target == "aws":
        import boto3

        from stratoserve.declaration.stages import deployed_prefix

        prefix = deployed_prefix(project, context.stage)
        registry = TenantRegistry(boto3.client("dynamodb"), table_name(prefix))
        return KeyService(boto3.client("apigateway"), project=prefix, registry=registry), None
    stack = context.local_stack(otherwise=", or pass --target aws")
    registry = TenantRegistry(
        stack.client("dynamodb"),
        (stack.jobs or {}).get("tenants_table") or table_name(project),
    )
    service = KeyService(stack.client("apigateway"), project=project, registry=registry)
    return service, LocalKeyStore(context.state)


def create_command(context: CliContext, arguments: argparse.Namespace) -> int:
    service, store = key_service(context)
    issued = service.create(arguments.tenant, arguments.plan)
    if store is not None:
        store.add(issued)  # kept across restarts; the gateway reloads its keys from it
    if arguments.json:
        console.print_json(data=asdict(issued))
    else:
        console.print(
            f"created key {issued.key_id} for tenant {issued.tenant} on plan {issued.plan}\n"
            f"  key (shown once): [bold]{issued.key}[/]",
            highlight=False,
        )
    return 0


def list_command(context: CliContext, arguments: argparse.Namespace) -> int:
    service, _ = key_service(context)
    keys = service.keys()
    if arguments.json:
        console.print_json(data=[asdict(key) for key in keys])
        return 0
    table = Table("tenant", "tenant id", "plan", "key id", "state", "created")
    for key in keys:
        state = "active" if key.enabled else "revoked"
        if key.enabled and key.tenant_id is None:
            state = "unregistered: run `stratoserve keys migrate`"
        table.add_row(key.tenant, key.tenant_id or "-", key.plan, key.key_id, state, key.created)
    console.print(table)
    return 0


def revoke_command(context: CliContext, arguments: argparse.Namespace) -> int:
    service, store = key_service(context)
    revoked = service.revoke(arguments.tenant)
    if store is not None:
        store.disable(arguments.tenant)
    if arguments.json:
        console.print_json(data={"tenant": arguments.tenant, "revoked": revoked})
    else:
        console.print(f"revoked {', '.join(revoked)} of tenant {arguments.tenant}", highlight=False)
    return 0


def rotate_command(context: CliContext, arguments: argparse.Namespace) -> int:
    service, store = key_service(context)
    issued, old = service.rotate(arguments.tenant)
    if store is not None:
        store.rotate(issued)
    if arguments.json:
        console.print_json(data={**asdict(issued), "revoked": old})
    else:
        console.print(
            f"created key {issued.key_id} for tenant {issued.tenant} (same tenant id, jobs and "
            f"callback secret); revoked {', '.join(old)}\n"
            f"  key (shown once): [bold]{issued.key}[/]",
            highlight=False,
        )
    return 0


def rotate_secret_command(context: CliContext, arguments: argparse.Namespace) -> int:
    service, store = key_service(context)
    entry = service.rotate_secret(arguments.tenant)
    if store is not None:
        store.set_secret_version(arguments.tenant, entry.secret_version)
    if arguments.json:
        console.print_json(
            data={
                "tenant": entry.tenant,
                "tenant_id": entry.tenant_id,
                "secret_version": entry.secret_version,
            }
        )
    else:
        console.print(
            f"tenant {entry.tenant}: callback secret version {entry.secret_version} for jobs "
            "submitted from now on (within a minute); jobs already submitted keep theirs. "
            f"The secret: stratoserve jobs callback-secret --tenant {entry.tenant}",
            highlight=False,
        )
    return 0


def migrate_command(context: CliContext, arguments: argparse.Namespace) -> int:
    service, _ = key_service(context)
    migrated = service.migrate()
    if arguments.json:
        console.print_json(data=[asdict(key) for key in migrated])
        return 0
    console.print(f"registered {len(migrated)} key(s) made before the registry", highlight=False)
    for key in migrated:
        console.print(f"  {key.key_id} of tenant {key.tenant}", highlight=False)
    return 0


def usage_command(context: CliContext, arguments: argparse.Namespace) -> int:
    if context.target == "aws":
        return usage_on_aws(context, arguments)
    from stratoserve.local.metering import UsageFile

    _ = context.declaration  # a bad declaration is refused here too, as by every command
    tenants = UsageFile(context.state).load().get("tenants", {})
    if arguments.tenant:
        tenants = {name: figures for name, figures in tenants.items() if name == arguments.tenant}
    if arguments.json:
        console.print_json(data=tenants)
        return 0
    if not tenants:
        who = f"tenant {arguments.tenant}" if arguments.tenant else "any tenant"
        console.print(
            f"no usage recorded for {who} yet: the local stack writes it while "
            "`stratoserve dev` serves keyed requests",
            highlight=False,
        )
        return 0
    table = Table("tenant", "requests", "model ms", "quota used", "resets at")
    for name, figures in sorted(tenants.items()):
        quota = figures.get("quota")
        table.add_row(
            name,
            str(int(figures["requests"])),
            f"{figures['model_ms']:.1f}",
            f"{quota['used']} / {quota['limit']} a {quota['period'].lower()}" if quota else "-",
            quota["resets_at"] if quota else "-",
        )
    console.print(table)
    return 0


def usage_on_aws(context: CliContext, arguments: argparse.Namespace) -> int:
    """API Gateway's count for the current calendar month (model time is metered only by
    the local stack)."""
    import datetime as dt

    service, _ = key_service(context)
    today = dt.datetime.now(dt.UTC).date()
    usage = service.usage(today.replace(day=1), today, arguments.tenant)
    if arguments.json:
        console.print_json(data=usage)
        return 0
    table = Table("tenant", "plan", f"requests since {today.replace(day=1)}", "quota left")
    for name, figures in sorted(usage.items()):
        left = figures.get("quota_remaining")
        table.add_row(
            name, figures["plan"], str(figures["requests"]), "-" if left is None else str(left)
        )
    console.print(table)
    return 0
