"""Shared contract between the recipe modules and the orchestrator that runs them.

A recipe is a module exposing a module-level ``build`` function and a ``SOURCE_PACKAGES``
tuple (see :class:`Recipe`). The orchestrator fingerprints the recipe's source files (its
module, helper modules named after it such as ``minilm_parity.py``, and this file), the
installed versions of its ``SOURCE_PACKAGES`` and the version's params to decide when an
artifact must be rebuilt, so recipes declare no fingerprint of their own. Intermediates
a recipe caches under ``work_dir`` are keyed by the recipe itself on the content of its
sources.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from pathlib import Path

ProgressFn = Callable[[str], None]
"""Receives short human-readable progress lines, e.g. ``"exporting MiniLM to ONNX"``."""

Metric = float | int | str


class RecipeError(Exception):
    """A build could not produce a trustworthy artifact (bad params, parity below threshold)."""


@dataclass(frozen=True)
class RecipeResult:
    """What a build produced: artifact files by name and the parity figures for the manifest."""

    files: dict[str, Path]
    metrics: dict[str, Metric] = field(default_factory=dict)


class Recipe(Protocol):
    """Structural type satisfied by every recipe module (modules can implement protocols)."""

    SOURCE_PACKAGES: tuple[str, ...]
    """Distributions (as pip names them) whose versions shape the artifact; read through
    package metadata, so listing one costs no import."""

    def build(
        self,
        params: Mapping[str, Any],
        out_dir: Path,
        work_dir: Path,
        progress: ProgressFn,
    ) -> RecipeResult: ...


def check_params(params: Mapping[str, Any], allowed: frozenset[str]) -> None:
    """Reject unknown keys: a typo in the declaration must not silently build with defaults."""
    unknown = sorted(set(params) - allowed)
    if unknown:
        accepted = ", ".join(sorted(allowed)) or "none"
        raise RecipeError(f"unknown param(s) {', '.join(map(repr, unknown))}; accepted: {accepted}")


def int_param(params: Mapping[str, Any], key: str, default: int) -> int:
    """Read an int param; bools are refused since TOML ``true`` passes ``isinstance(x, int)``."""
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RecipeError(f"param {key!r} must be an integer, got {value!r}")
    return value


@contextmanager
def atomic_target(target: Path) -> Iterator[Path]:
    """Yield a temp path that replaces ``target`` only if the block succeeds.

    The orchestrator treats an existing artifact as built, so an interrupted build must
    never leave a half-written file under the final name. The temp file lives beside the
    target so the final rename stays on one filesystem and is atomic.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    # Keep the real suffix last: some writers pick the serialisation format from it.
    temp = target.with_name(f".{target.stem}.{os.getpid()}.tmp{target.suffix}")
    try:
        yield temp
        temp.replace(target)
    finally:
        temp.unlink(missing_ok=True)


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file (hashlib reads it in blocks: artifacts run to ~90 MB)."""
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()
