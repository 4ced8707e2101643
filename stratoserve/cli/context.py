"""One context per call (chalice's `CLIFactory`): the declaration file, the declaration,
the state folder and the running local stack, each resolved once, when a command first asks
for it, and handed to the command.

Everything heavier than the loader (the local stack's modules, boto3) is imported by the
property that needs it, so `stratoserve --help` stays quick.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from stratoserve.cli._common import UsageError
from stratoserve.declaration import default_path, load_declaration

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable
    from pathlib import Path
    from typing import TypeAlias

    from stratoserve.declaration import Declaration

    Command: TypeAlias = Callable[["CliContext", argparse.Namespace], int]
    """A command: the call's context and its parsed arguments in, the exit status out."""

NO_LOCAL_STACK = "no local stack is running: start `stratoserve dev` first"


@dataclass(frozen=True)
class LocalStack:
    """The running `stratoserve dev`, as its record (.stratoserve/stack.json) describes it."""

    aws_url: str
    """The local AWS (moto) that the stack's functions and these commands call."""
    token: str | None
    """The stack's token, which every call to its local AWS signs with."""
    jobs: dict[str, str] | None
    """The job path's resources (stratoserve.jobs.JobResources' fields), where recorded."""

    def client(self, service: str) -> Any:
        """A boto3 client of the local AWS, signed with the stack's token."""
        from stratoserve.local.aws import client

        return client(service, self.aws_url, self.token)


@dataclass(frozen=True)
class CliContext:
    """What one `stratoserve` call works on; built by `main` from the parsed arguments."""

    source: Path
    """The declaration file as named: --config, else $STRATOSERVE_CONFIG, else
    ./stratoserve.toml."""
    target: str = "local"
    """Where keys and jobs live: "local" (the running `stratoserve dev`) or "aws"."""
    stage: str = "prod"
    """With target "aws": the deployed stage."""

    @classmethod
    def from_arguments(cls, arguments: argparse.Namespace) -> CliContext:
        """Only what the parser gave: nothing is read until a command asks for it."""
        return cls(
            source=getattr(arguments, "config", None) or default_path(),
            target=getattr(arguments, "target", None) or "local",
            stage=getattr(arguments, "stage", None) or "prod",
        )

    @cached_property
    def config(self) -> Path:
        """The declaration file, absolute: the project's root is its folder."""
        return self.source.resolve()

    @cached_property
    def declaration(self) -> Declaration:
        """The declaration, loaded and checked (a bad file raises DeclarationError)."""
        return load_declaration(self.config)

    @cached_property
    def state(self) -> Path:
        """The local state folder: .stratoserve/ beside the declaration, or
        $STRATOSERVE_STATE_DIR."""
        from stratoserve.local.stack import state_dir

        return state_dir(self.config.parent)

    def local_stack(self, otherwise: str = "") -> LocalStack:
        """The running local stack; when none runs, a usage error that says to start one
        (`otherwise`: what else the user may do)."""
        from stratoserve.local.stack import running_stack

        record = running_stack(self.state)
        if record is None:
            raise UsageError(NO_LOCAL_STACK + otherwise)
        return LocalStack(
            aws_url=record["aws_url"], token=record.get("token"), jobs=record.get("jobs")
        )


def show_help(parser: argparse.ArgumentParser) -> Command:
    """The command of a group called without a subcommand: its help, exit status 2."""

    def show(_context: CliContext, _arguments: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    return show


def aws_errors(command: Command) -> Command:
    """AWS's and the key store's refusals as one line: no region, no credentials, a
    denied call, a damaged keys.json."""

    def run(context: CliContext, arguments: argparse.Namespace) -> int:
        from botocore.exceptions import BotoCoreError, ClientError

        from stratoserve.keys import KeysError

        try:
            return command(context, arguments)
        except (BotoCoreError, ClientError, KeysError) as error:
            hint = " (configure AWS credentials and a region)" if context.target == "aws" else ""
            raise UsageError(f"{error}{hint}") from None

    return run
