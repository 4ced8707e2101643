"""`stratoserve layers build`: the Lambda layers of the declared functions, with their
sizes against Lambda's limits."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

from stratoserve.cli._common import UsageError, config_option, console, errors
from stratoserve.cli.context import show_help

if TYPE_CHECKING:
    import argparse

    from layers.builder import BuildReport
    from stratoserve.cli._common import Subcommands
    from stratoserve.cli.context import CliContext

MIB = 1 << 20


def add_parser(commands: Subcommands) -> None:
    layers = commands.add_parser(
        "layers",
        help="build the functions' Lambda layers (no Docker) and check Lambda's size limits",
    )
    layers.set_defaults(command=show_help(layers))
    actions = layers.add_subparsers(title="commands", metavar="COMMAND")
    build = actions.add_parser(
        "build",
        help="build every layer the declared functions carry (skips what is up to date)",
        description="pip-install each layer's packages, pinned to this environment's versions, "
        "for Lambda's platform (manylinux_2_28, Python 3.12) into build/layers/<arch>/, trim "
        "and compile them, zip them deterministically, and check every function's code plus "
        "layers against Lambda's 250 MB. Exits non-zero when a function is over a limit.",
    )
    config_option(build)
    build.add_argument(
        "--arch",
        choices=["arm64", "x86_64"],
        default=None,
        help="only the functions of this Lambda architecture (default: every one declared)",
    )
    build.add_argument("--force", action="store_true", help="rebuild even if up to date")
    build.add_argument("--json", action="store_true", help="print the report as JSON")
    build.set_defaults(command=build_command)


def build_command(context: CliContext, arguments: argparse.Namespace) -> int:
    declaration = context.declaration
    try:
        from layers.builder import LayerError, build_layers
    except ImportError as error:
        raise UsageError(
            f"the layer builder needs {error.name}: pip install -e '.[runtime,dev]'"
        ) from None
    try:
        if arguments.json:
            report = build_layers(
                declaration, context.config, architecture=arguments.arch, force=arguments.force
            )
        else:
            with console.status("building layers") as status:
                report = build_layers(
                    declaration,
                    context.config,
                    architecture=arguments.arch,
                    force=arguments.force,
                    progress=status.update,
                )
    except LayerError as error:
        raise UsageError(str(error)) from None
    if arguments.json:
        console.print_json(data=report.to_json())
    else:
        print_report(report)
    for problem in report.problems:
        errors.print(f"[red]error:[/] {problem}", highlight=False, soft_wrap=True)
    return 1 if report.problems else 0


def print_report(report: BuildReport) -> None:
    layers = Table("layer", "arch", "unzipped MB", "zipped MB", "status")
    for layer in report.layers:
        took = f" in {layer.seconds:.0f} s" if layer.status == "built" else ""
        layers.add_row(
            layer.name,
            layer.arch,
            f"{layer.unzipped_bytes / MIB:.1f}",
            f"{layer.zipped_bytes / MIB:.1f}",
            layer.status + took,
        )
    console.print(layers)
    functions = Table(
        "function", "arch", "package", "layers", "unzipped MB (code + layers)", "limit MB"
    )
    for function in report.functions:
        limit = "10240 (image)" if function.package == "image" else "250"
        functions.add_row(
            function.name,
            function.architecture,
            function.package,
            ", ".join(function.layers),
            f"{function.unzipped_bytes / MIB:.1f}",
            limit + (" [red]over[/]" if function.problems else ""),
        )
    console.print(functions)
    for layer in report.layers:
        for note in layer.notes:
            console.print(f"  {layer.name} ({layer.arch}): {note}", highlight=False)
    for note in report.notes:
        console.print(f"  note: {note}", highlight=False, soft_wrap=True)
