"""The `stratoserve` command line.

Every command exits non-zero with one clear line per problem on bad input, never a
traceback. Heavy modules (uvicorn, the recipes) are imported by the command that needs them.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from stratoserve import __version__
from stratoserve.declaration import DeclarationError, default_path, load_declaration

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Sequence
    from typing import Any

    from stratoserve.declaration import Declaration
    from stratoserve.keys import KeyService, LocalKeyStore

console = Console()
errors = Console(stderr=True)


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    arguments = parser.parse_args(argv)
    command: Callable[[argparse.Namespace], int] = arguments.command
    try:
        return command(arguments)
    except DeclarationError as error:
        for problem in error.problems:
            errors.print(
                f"[red]error:[/] {error.source}: {problem}", highlight=False, soft_wrap=True
            )
        return 2
    except UsageError as error:
        errors.print(f"[red]error:[/] {error}", highlight=False, soft_wrap=True)
        return 2
    except OSError as error:
        # A state folder that is a file, a full disk, a permission: the OS's own words.
        errors.print(f"[red]error:[/] {error}", highlight=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stratoserve",
        description="Serverless AI inference APIs from one declaration (stratoserve.toml).",
    )
    parser.add_argument("--version", action="version", version=f"stratoserve {__version__}")
    parser.set_defaults(command=_help(parser))
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    dev = commands.add_parser(
        "dev",
        help="run the local stack: gateway + local Lambda environments",
        description="Serve the declared API on this machine, the way API Gateway and Lambda "
        "serve it on AWS: keys enforced, real proxy events, one process per environment.",
    )
    _config_option(dev)
    dev.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    dev.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free)")
    dev.add_argument(
        "--api-key",
        help="the dev API key (default: $STRATOSERVE_DEV_API_KEY, else the one kept in "
        ".stratoserve/, else a new one). Prefer the variable: a command line is visible to "
        "every user of the machine (ps)",
    )
    dev.add_argument("--quiet", action="store_true", help="no access log lines")
    dev.set_defaults(command=_dev)

    models = commands.add_parser("models", help="build and inspect model artifacts")
    models.set_defaults(command=_help(models))
    models_commands = models.add_subparsers(title="commands", metavar="COMMAND")
    build = models_commands.add_parser(
        "build",
        help="build declared models with their recipes (skips what is up to date)",
        description="Build each declared model version with its recipe into models_dir, "
        "recording sha256, size and parity figures in manifest.json.",
    )
    _config_option(build)
    build.add_argument("names", nargs="*", metavar="NAME", help="models to build (default: all)")
    build.add_argument("--force", action="store_true", help="rebuild even if up to date")
    build.set_defaults(command=_models_build)
    _keys_parser(commands)
    from stratoserve.cli_jobs import add_jobs_parser

    add_jobs_parser(commands)
    from stratoserve.cli_layers import add_layers_parser

    add_layers_parser(commands)
    return parser


def _run_event_loop(main: Coroutine[Any, Any, None]) -> None:
    """uvloop where it is installed (the gateway's per-request overhead is mostly the event
    loop's), the standard loop otherwise."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


def _keys_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser(
        "keys",
        help="tenants' API keys on usage plans, locally or on AWS",
        description="Create, list and revoke tenants' API keys with API Gateway's own API, "
        "each registered in the tenant registry the functions read: against the running "
        "`stratoserve dev` (--target local, the default while it runs) or a deployed stack "
        "(--target aws).",
    )
    keys.set_defaults(command=_help(keys))
    actions = keys.add_subparsers(title="commands", metavar="COMMAND")
    create = actions.add_parser("create", help="a key for a tenant on a plan (shown once)")
    create.add_argument("--tenant", required=True, type=_tenant_name)
    create.add_argument("--plan", required=True)
    create.set_defaults(command=_keys_create)
    listing = actions.add_parser("list", help="every tenant's keys (never their values)")
    listing.set_defaults(command=_keys_list)
    revoke = actions.add_parser("revoke", help="disable a tenant's key: refused at once")
    revoke.add_argument("--tenant", required=True, type=_tenant_name)
    revoke.set_defaults(command=_keys_revoke)
    rotate = actions.add_parser(
        "rotate", help="a new key for a tenant (shown once), its old key revoked; same tenant"
    )
    rotate.add_argument("--tenant", required=True, type=_tenant_name)
    rotate.set_defaults(command=_keys_rotate)
    rotate_secret = actions.add_parser(
        "rotate-secret",
        help="a new version of a tenant's callback secret (jobs submitted from now on)",
    )
    rotate_secret.add_argument("--tenant", required=True, type=_tenant_name)
    rotate_secret.set_defaults(command=_keys_rotate_secret)
    migrate = actions.add_parser(
        "migrate",
        help="register keys made before the tenant registry (each keeps its jobs and secret)",
    )
    migrate.set_defaults(command=_keys_migrate)
    usage = actions.add_parser(
        "usage",
        help="requests per tenant; locally also model compute time and quota use",
    )
    usage.add_argument("--tenant", type=_tenant_name)
    usage.set_defaults(command=_keys_usage)
    for action in (create, listing, revoke, rotate, rotate_secret, migrate, usage):
        action.set_defaults(command=_aws_errors(action.get_default("command")))
        _config_option(action)
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
        action.add_argument("--json", action="store_true", help="machine-readable output")


def _aws_errors(
    command: Callable[[argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    """AWS's and the key store's refusals as one line: no region, no credentials, a
    denied call, a damaged keys.json."""

    def run(arguments: argparse.Namespace) -> int:
        from botocore.exceptions import BotoCoreError, ClientError

        from stratoserve.keys import KeysError

        try:
            return command(arguments)
        except (BotoCoreError, ClientError, KeysError) as error:
            hint = " (configure AWS credentials and a region)" if arguments.target == "aws" else ""
            raise UsageError(f"{error}{hint}") from None

    return run


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError("must be a whole number of at least 1")
    return number


def _tenant_name(value: str) -> str:
    if not value or len(value) > 64 or not all(c.isalnum() or c in "-_." for c in value):
        raise argparse.ArgumentTypeError("a tenant is 1-64 letters, digits, '-', '_' or '.'")
    return value


def _help(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    def show(_: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    return show


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="the declaration (default: $STRATOSERVE_CONFIG or ./stratoserve.toml)",
    )


def _models_build(arguments: argparse.Namespace) -> int:
    source = arguments.config or default_path()
    declaration = load_declaration(source)
    try:
        from models.builder import BuildError, build_models
    except ImportError as error:
        raise UsageError(
            f"model recipes need the models extra ({error.name} is missing): "
            "pip install -e '.[models]'"
        ) from None
    try:
        with console.status("building models") as status:

            def progress(line: str) -> None:
                console.print(f"  {line}", highlight=False)
                status.update(line)

            outcomes = build_models(
                declaration,
                source,
                arguments.names or None,
                force=arguments.force,
                progress=progress,
            )
    except BuildError as error:
        raise UsageError(str(error)) from None
    for outcome in outcomes:
        figures = ", ".join(
            f"{name}={value:.4f}" if isinstance(value, float) else f"{name}={value}"
            for name, value in (outcome.metrics or {}).items()
            if name in {"accuracy", "onnx_agreement", "cosine_min", "pair_cosine"}
        )
        took = f" in {outcome.seconds:.1f} s" if outcome.status == "built" else ""
        console.print(
            f"{outcome.model} v{outcome.version}: {outcome.status}{took}"
            + (f"  ({figures})" if figures else ""),
            highlight=False,
        )
    return 0


def _dev(arguments: argparse.Namespace) -> int:
    from stratoserve.local.environments import InvocationError
    from stratoserve.local.keys import BadKeyError, resolve_dev_key
    from stratoserve.local.stack import DevOptions, StackError, secure_state_dir, serve, state_dir

    source = (arguments.config or default_path()).resolve()
    declaration = load_declaration(source)
    if not 0 <= arguments.port <= 65535:
        raise UsageError(f"--port {arguments.port}: must be 0..65535")
    state = state_dir(source.parent)
    secure_state_dir(state)  # before the dev key is kept there
    try:
        api_key, key_source = resolve_dev_key(arguments.api_key, state)
    except BadKeyError as error:
        raise UsageError(str(error)) from None
    logging.basicConfig(
        level=logging.WARNING if arguments.quiet else logging.INFO,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    options = DevOptions(
        config=source, host=arguments.host, port=arguments.port, api_key=api_key, state_dir=state
    )

    def ready(url: str, init_ms: dict[str, float], notes: list[str]) -> None:
        inits = ", ".join(f"{name} {ms:.0f} ms" for name, ms in sorted(init_ms.items()))
        console.print(
            f"[bold green]stratoserve dev[/] listening on [bold]{url}[/]", highlight=False
        )
        console.print(f"  functions ready (cold start): {inits}", highlight=False)
        for note in notes:
            console.print(f"  {note}", highlight=False, soft_wrap=True)
        # The dev key is shown here on purpose, once per start: it is the local stack's
        # login, never logged anywhere else.
        console.print(f"  API key ({key_source}): [bold]{api_key}[/]", highlight=False)
        console.print("  try:", highlight=False)
        for example in _curl_examples(url, api_key, declaration):
            console.print(f"    {example}", highlight=False, soft_wrap=True)
        console.file.flush()

    try:
        _run_event_loop(serve(options, on_ready=ready))
    except StackError as error:
        raise UsageError(str(error)) from None
    except InvocationError as error:
        # A function that cannot start (a model that does not load, a broken import):
        # its traceback is above, in the function's own output, as Lambda would log it.
        raise UsageError(f"{error}; see the function's output above") from None
    return 0


def _key_service(arguments: argparse.Namespace) -> tuple[KeyService, LocalKeyStore | None]:
    """The key service for the chosen target, and the local key store when local."""
    from stratoserve.keys import KeyService, LocalKeyStore
    from stratoserve.local.stack import running_stack, state_dir
    from stratoserve.tenants import TenantRegistry, table_name

    source = (arguments.config or default_path()).resolve()
    declaration = load_declaration(source)
    if arguments.target == "aws":
        import boto3

        from stratoserve.declaration.stages import deployed_prefix

        prefix = deployed_prefix(declaration.project.name, arguments.stage)
        registry = TenantRegistry(boto3.client("dynamodb"), table_name(prefix))
        return KeyService(boto3.client("apigateway"), project=prefix, registry=registry), None
    state = state_dir(source.parent)
    stack = running_stack(state)
    if stack is None:
        raise UsageError(
            "no local stack is running: start `stratoserve dev` first, or pass --target aws"
        )
    from stratoserve.local.aws import client

    registry = TenantRegistry(
        client("dynamodb", stack["aws_url"], stack.get("token")),
        stack.get("jobs", {}).get("tenants_table") or table_name(declaration.project.name),
    )
    service = KeyService(
        client("apigateway", stack["aws_url"], stack.get("token")),
        project=declaration.project.name,
        registry=registry,
    )
    return service, LocalKeyStore(state)


def _keys_create(arguments: argparse.Namespace) -> int:
    service, store = _key_service(arguments)
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


def _keys_list(arguments: argparse.Namespace) -> int:
    service, _ = _key_service(arguments)
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


def _keys_revoke(arguments: argparse.Namespace) -> int:
    service, store = _key_service(arguments)
    revoked = service.revoke(arguments.tenant)
    if store is not None:
        store.disable(arguments.tenant)
    if arguments.json:
        console.print_json(data={"tenant": arguments.tenant, "revoked": revoked})
    else:
        console.print(f"revoked {', '.join(revoked)} of tenant {arguments.tenant}", highlight=False)
    return 0


def _keys_rotate(arguments: argparse.Namespace) -> int:
    service, store = _key_service(arguments)
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


def _keys_rotate_secret(arguments: argparse.Namespace) -> int:
    service, store = _key_service(arguments)
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


def _keys_migrate(arguments: argparse.Namespace) -> int:
    service, _ = _key_service(arguments)
    migrated = service.migrate()
    if arguments.json:
        console.print_json(data=[asdict(key) for key in migrated])
        return 0
    console.print(f"registered {len(migrated)} key(s) made before the registry", highlight=False)
    for key in migrated:
        console.print(f"  {key.key_id} of tenant {key.tenant}", highlight=False)
    return 0


def _keys_usage(arguments: argparse.Namespace) -> int:
    if arguments.target == "aws":
        return _keys_usage_aws(arguments)
    from stratoserve.local.metering import UsageFile
    from stratoserve.local.stack import state_dir

    source = (arguments.config or default_path()).resolve()
    load_declaration(source)
    tenants = UsageFile(state_dir(source.parent)).load().get("tenants", {})
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


def _keys_usage_aws(arguments: argparse.Namespace) -> int:
    """API Gateway's count for the current calendar month (model time is metered only by
    the local stack)."""
    import datetime as dt

    service, _ = _key_service(arguments)
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


def _curl_examples(url: str, api_key: str, declaration: Declaration) -> list[str]:
    newest = max(declaration.api, key=lambda version: int(version[1:]))
    key = f"-H 'x-api-key: {api_key}'"
    examples = [f"curl -s {url}/{newest}/models {key}"]
    for model in declaration.api[newest].models:
        if declaration.models[model].task == "embed":
            body = '{"inputs": ["A man is eating food."]}'
            examples.append(
                f"curl -s {url}/{newest}/predict/{model} {key} "
                f"-H 'content-type: application/json' -d '{body}'"
            )
            break
    return examples


if __name__ == "__main__":
    # Run as `python -m stratoserve.cli`, this file is __main__; the command modules import
    # `stratoserve.cli`, a second copy with its own UsageError. Run that one's main.
    from stratoserve.cli import main as package_main

    sys.exit(package_main())
