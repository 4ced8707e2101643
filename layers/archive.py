"""Deterministic zips: the same files give the same bytes (sorted entries, one fixed
timestamp, fixed permissions), so an unchanged layer keeps its hash and CDK asset."""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import zipfile
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

FIXED_TIME = (1980, 1, 1, 0, 0, 0)
"""The earliest time a zip can hold. Compiled files do not depend on it: they are written
with unchecked-hash invalidation, which never compares source timestamps."""


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file (hashlib reads it in blocks: layer zips run to ~40 MB)."""
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def tree_entries(root: Path, prefix: str) -> list[tuple[str, Path]]:
    """(name in the zip, file) for every file under root, the names under `prefix`."""
    return [
        (f"{prefix}/{path.relative_to(root).as_posix()}", path)
        for path in root.rglob("*")
        if path.is_file() and not path.is_symlink()
    ]


def unzipped_bytes(entries: Iterable[tuple[str, Path]]) -> int:
    return sum(path.stat().st_size for _, path in entries)


def write_zip(entries: Iterable[tuple[str, Path]], target: Path) -> str:
    """Write the entries, sorted by name, to target (atomically); its sha256."""
    target.parent.mkdir(parents=True, exist_ok=True)
    # Unique per writer: two builds at once (two synths) never write one partial file.
    partial = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}.partial")
    with zipfile.ZipFile(partial, "w") as archive:
        for name, path in sorted(entries):
            info = zipfile.ZipInfo(name, FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # unix: the permissions below are read as such
            executable = os.access(path, os.X_OK)
            info.external_attr = (0o100755 if executable else 0o100644) << 16
            with path.open("rb") as source, archive.open(info, "w") as sink:
                shutil.copyfileobj(source, sink, 1 << 20)
    partial.replace(target)
    return sha256_of(target)
