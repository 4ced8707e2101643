"""The smallest valid stratoserve.toml, for tests that add to it."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

import pytest

from stratoserve.declaration import DeclarationError, load_declaration

if TYPE_CHECKING:
    from pathlib import Path

MINIMAL = """
[models.digits]
task = "classify"
[models.digits.versions.1]
artifact = "digits/1/model.onnx"
[api.v1]
models = { digits = "1" }
"""


def write_declaration(tmp_path: Path, extra: str) -> Path:
    """MINIMAL plus `extra`, as tmp_path/stratoserve.toml."""
    path = tmp_path / "stratoserve.toml"
    path.write_text(textwrap.dedent(MINIMAL) + textwrap.dedent(extra))
    return path


def declaration_problems(tmp_path: Path, extra: str) -> list[str]:
    """The loader's lines for MINIMAL plus `extra` (which must be refused)."""
    with pytest.raises(DeclarationError) as caught:
        load_declaration(write_declaration(tmp_path, extra))
    return caught.value.problems
