"""`stratoserve models build`: the declared models' artifacts, built with their recipes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stratoserve.cli._common import UsageError, config_option, console
from stratoserve.cli.context import show_help
from stratoserve.declaration import load_declaration

if TYPE_CHECKING:
    import argparse

    from stratoserve.cli._common import Subcommands
    from stratoserve.cli.context import CliContext


def add_parser(commands: Subcommands) -> None:
    models = commands.add_parser("models", help="build and inspect model artifacts")
    models.set_defaults(command=show_help(models))
    actions = models.add_subparsers(title="commands", metavar="COMMAND")
    build = actions.add_parser(
        "build",
        help="build declared models with their recipes (skips what is up to date)",
        description="Build each declared model version with its recipe into models_dir, "
        "recording sha256, size and parity figures in manifest.json.",
    )
    config_option(build)
    build.add_argument("names", nargs="*", metavar="NAME", help="models to build (default: all)")
    build.add_argument("--force", action="store_true", help="rebuild even if up to date")
    build.set_defaults(command=build_command)


def build_command(context: CliContext, arguments: argparse.Namespace) -> int:
    # The file as named, not context.config: its problems have always been reported under
    # the name the user gave (models_dir resolves the folder itself).
    declaration = load_declaration(context.source)
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
                context.source,
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
