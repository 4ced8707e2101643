"""One context per call: the declaration file, the declaration and the state folder are
resolved once, when a command first asks, and a command without a running stack says so in
one line."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

import pytest

from stratoserve.cli import main
from stratoserve.cli._common import UsageError
from stratoserve.cli.context import CliContext
from stratoserve.declaration import DeclarationError
from tests.conftest import DECLARATION_FILE

if TYPE_CHECKING:
    from pathlib import Path


def test_the_declaration_file_defaults_to_the_variable_then_the_working_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("STRATOSERVE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    plain = CliContext.from_arguments(argparse.Namespace())
    assert plain.source.name == "stratoserve.toml"
    assert plain.config == tmp_path.resolve() / "stratoserve.toml"
    assert (plain.target, plain.stage) == ("local", "prod")

    monkeypatch.setenv("STRATOSERVE_CONFIG", "elsewhere/project.toml")
    assert CliContext.from_arguments(argparse.Namespace(config=None)).config == (
        tmp_path.resolve() / "elsewhere" / "project.toml"
    )
    named = CliContext.from_arguments(
        argparse.Namespace(config=DECLARATION_FILE, target="aws", stage="dev")
    )
    assert (named.config, named.target, named.stage) == (DECLARATION_FILE, "aws", "dev")


def test_nothing_is_read_until_a_command_asks(tmp_path: Path) -> None:
    context = CliContext(source=tmp_path / "absent.toml")  # building it reads nothing
    with pytest.raises(DeclarationError, match="file not found"):
        _ = context.declaration
    loaded = CliContext(source=DECLARATION_FILE)
    assert loaded.declaration is loaded.declaration  # loaded once


def test_the_state_folder_is_beside_the_declaration_or_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("STRATOSERVE_STATE_DIR", raising=False)
    assert CliContext(source=DECLARATION_FILE).state == DECLARATION_FILE.parent / ".stratoserve"
    monkeypatch.setenv("STRATOSERVE_STATE_DIR", os.fspath(tmp_path))
    assert CliContext(source=DECLARATION_FILE).state == tmp_path


def test_no_running_stack_is_one_line_that_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("STRATOSERVE_STATE_DIR", os.fspath(tmp_path))
    context = CliContext(source=DECLARATION_FILE)
    with pytest.raises(UsageError, match=r"start `stratoserve dev` first, or pass --target aws$"):
        context.local_stack(otherwise=", or pass --target aws")


@pytest.mark.parametrize(
    ("command", "line"),
    [
        (
            ["keys", "list"],
            "error: no local stack is running: start `stratoserve dev` first, or pass --target aws",
        ),
        (["jobs", "list"], "error: no local stack is running: start `stratoserve dev` first"),
        (
            ["jobs", "callback-secret", "--tenant", "nobody"],
            "error: tenant nobody has no active key: its callbacks are signed no more",
        ),
    ],
)
def test_commands_refuse_in_one_line_and_exit_2(
    command: list[str],
    line: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("STRATOSERVE_STATE_DIR", os.fspath(tmp_path))
    assert main([*command, "--config", os.fspath(DECLARATION_FILE)]) == 2
    assert capsys.readouterr().err.strip() == line


def test_a_bad_declaration_is_one_line_per_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    absent = tmp_path / "absent.toml"
    assert main(["keys", "usage", "--config", os.fspath(absent)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {absent}: file not found (pass --config or set STRATOSERVE_CONFIG)"
    )


def _commands(parser: argparse.ArgumentParser, path: list[str]) -> list[list[str]]:
    """Every command and group of the parser, as the words that name it."""
    found = [path]
    for action in parser._actions:  # argparse keeps its subcommands nowhere public
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found += _commands(child, [*path, name])
    return found


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    from stratoserve.cli import build_parser

    commands = _commands(build_parser(), [])
    assert {" ".join(words) for words in commands if len(words) == 1} == {
        "dev",
        "models",
        "keys",
        "jobs",
        "layers",
    }
    for words in commands:
        with pytest.raises(SystemExit) as exit_:
            main([*words, "--help"])
        assert exit_.value.code == 0, words
        assert "usage: stratoserve" in capsys.readouterr().out


def test_a_group_without_a_command_shows_its_help_and_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for group in ([], ["models"], ["keys"], ["jobs"], ["layers"]):
        assert main(group) == 2
        assert "commands:" in capsys.readouterr().out
