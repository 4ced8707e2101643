"""`stratoserve layers build` refuses bad input with one line, before building anything."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stratoserve.cli import main
from tests.conftest import DECLARATION_FILE

if TYPE_CHECKING:
    import pytest


def test_an_architecture_no_function_uses(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["layers", "build", "--config", str(DECLARATION_FILE), "--arch", "x86_64"])
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        "error: no function is declared with architecture x86_64"
    )


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["layers"]) == 2
    assert "build" in capsys.readouterr().out
