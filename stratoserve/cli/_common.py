"""What every command module shares: the consoles, the one-line usage error, and the
argument types and options that several command groups declare alike."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

if TYPE_CHECKING:
    from typing import TypeAlias

    Subcommands: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]
    """What a command group adds its commands to (`add_subparsers()`)."""

console = Console()
errors = Console(stderr=True)


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


def positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError("must be a whole number of at least 1")
    return number


def tenant_name(value: str) -> str:
    if not value or len(value) > 64 or not all(c.isalnum() or c in "-_." for c in value):
        raise argparse.ArgumentTypeError("a tenant is 1-64 letters, digits, '-', '_' or '.'")
    return value


def config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="the declaration (default: $STRATOSERVE_CONFIG or ./stratoserve.toml)",
    )


def json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")
