"""The `stratoserve` command line: one module per command group, one context per call.

Every command exits non-zero with one clear line per problem on bad input, never a
traceback. Heavy modules (uvicorn, the recipes) are imported by the command that needs them.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from stratoserve import __version__
from stratoserve.cli import dev, jobs, keys, layers, models
from stratoserve.cli._common import UsageError, errors
from stratoserve.cli.context import CliContext, show_help
from stratoserve.declaration import DeclarationError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from stratoserve.cli.context import Command

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    command: Command = arguments.command
    try:
        return command(CliContext.from_arguments(arguments), arguments)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stratoserve",
        description="Serverless AI inference APIs from one declaration (stratoserve.toml).",
    )
    parser.add_argument("--version", action="version", version=f"stratoserve {__version__}")
    parser.set_defaults(command=show_help(parser))
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    for group in (dev, models, keys, jobs, layers):
        group.add_parser(commands)
    return parser
