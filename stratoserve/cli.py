"""The `stratoserve` command line.

Every command exits non-zero with one clear line per problem on bad input, never a
traceback. Heavy modules (uvicorn, the recipes) are imported by the command that needs them.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from stratoserve import __version__
from stratoserve.declaration import DeclarationError, default_path, load_declaration

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from stratoserve.declaration import Declaration

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
        ".stratoserve/, else a new one)",
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
    return parser


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
    from stratoserve.local.stack import DevOptions, StackError, serve, state_dir

    source = (arguments.config or default_path()).resolve()
    declaration = load_declaration(source)
    if not 0 <= arguments.port <= 65535:
        raise UsageError(f"--port {arguments.port}: must be 0..65535")
    state = state_dir(source.parent)
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

    def ready(url: str, init_ms: dict[str, float]) -> None:
        inits = ", ".join(f"{name} {ms:.0f} ms" for name, ms in sorted(init_ms.items()))
        console.print(
            f"[bold green]stratoserve dev[/] listening on [bold]{url}[/]", highlight=False
        )
        console.print(f"  functions ready (cold start): {inits}", highlight=False)
        # The dev key is shown here on purpose, once per start: it is the local stack's
        # login, never logged anywhere else.
        console.print(f"  API key ({key_source}): [bold]{api_key}[/]", highlight=False)
        console.print("  try:", highlight=False)
        for example in _curl_examples(url, api_key, declaration):
            console.print(f"    {example}", highlight=False, soft_wrap=True)
        console.file.flush()

    try:
        asyncio.run(serve(options, on_ready=ready))
    except StackError as error:
        raise UsageError(str(error)) from None
    except InvocationError as error:
        # A function that cannot start (a model that does not load, a broken import):
        # its traceback is above, in the function's own output, as Lambda would log it.
        raise UsageError(f"{error}; see the function's output above") from None
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
    sys.exit(main())
