"""Trimming an installed layer: what Lambda never imports goes, what importlib.metadata
reads stays; shared objects lose their debug symbols where a strip for the target exists."""

from __future__ import annotations

import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

TEST_FOLDERS = frozenset({"tests", "test"})
DIST_INFO_KEPT = frozenset({"METADATA", "RECORD", "top_level.txt"})
"""Enough for importlib.metadata (version, files, packages); licences are kept too."""
LICENCE_PREFIXES = ("LICENSE", "LICENCE", "COPYING", "NOTICE", "AUTHORS")
ALWAYS_DROPPED = ("bin", "huggingface_hub", "boto3", "botocore", "s3transfer")
"""Console scripts (no shell on Lambda runs them); packages no layer may carry, in case one
came in anyway (pins.py leaves them out already)."""


@dataclass
class StripSummary:
    removed_bytes: dict[str, int] = field(default_factory=dict)
    """Bytes removed, by rule."""
    dropped: list[str] = field(default_factory=list)
    """Top-level packages or folders removed outright."""

    def add(self, rule: str, size: int) -> None:
        self.removed_bytes[rule] = self.removed_bytes.get(rule, 0) + size


def strip_tree(root: Path, drop_paths: Iterable[str] = ()) -> StripSummary:
    """Remove from an installed tree (a layer's python/): the paths given and those no
    layer carries, __pycache__, tests/ and test/ folders, *.pyi stubs, and dist-info files
    other than METADATA, RECORD, top_level.txt and licences."""
    summary = StripSummary()
    for relative in (*ALWAYS_DROPPED, *drop_paths):
        target = root / relative
        if target.exists():
            summary.add("dropped", _remove(target))
            summary.dropped.append(relative)
    for dist_info in sorted(root.glob("*.dist-info")):
        name = dist_info.name.removesuffix(".dist-info").split("-")[0].lower()
        if name in {"boto3", "botocore", "s3transfer", "huggingface_hub"}:
            summary.add("dropped", _remove(dist_info))
            continue
        for entry in sorted(dist_info.iterdir()):
            if entry.name in DIST_INFO_KEPT or _licence(entry):
                continue
            summary.add("dist-info", _remove(entry))
        summary.add("dist-info", _prune_record(dist_info / "RECORD", root))
    for folder in sorted(root.rglob("*"), key=lambda path: len(path.parts)):
        if not folder.is_dir() or folder.is_symlink() or not folder.exists():
            continue
        if folder.name == "__pycache__":
            summary.add("__pycache__", _remove(folder))
        elif folder.name in TEST_FOLDERS and folder.parent != root:
            summary.add("tests", _remove(folder))
    for stub in sorted(root.rglob("*.pyi")):
        summary.add("stubs", _remove(stub))
    return summary


def _prune_record(record: Path, root: Path) -> int:
    """Keep the RECORD lines of files that are still there: pip lists console scripts by
    a path outside the tree (and hashes them with the build folder's path in them)."""
    if not record.is_file():
        return 0
    text = record.read_text()
    kept = [
        line
        for line in text.splitlines()
        if (line and not line.startswith("../") and (root / line.split(",")[0]).is_file())
        or line.split(",")[0].endswith("dist-info/RECORD")
    ]
    pruned = "".join(f"{line}\n" for line in kept)
    record.write_text(pruned)
    return len(text.encode()) - len(pruned.encode())


def _licence(entry: Path) -> bool:
    return entry.name == "licenses" or entry.name.upper().startswith(LICENCE_PREFIXES)


def _remove(path: Path) -> int:
    if path.is_dir() and not path.is_symlink():
        size = sum(item.stat().st_size for item in path.rglob("*") if item.is_file())
        shutil.rmtree(path)
        return size
    size = path.stat().st_size
    path.unlink()
    return size


# --- shared objects --------------------------------------------------------------------


@dataclass
class BinaryStrip:
    tool: str | None
    """The strip that ran, or None when none on this machine understands the target."""
    files: int = 0
    saved_bytes: int = 0
    kept: list[str] = field(default_factory=list)
    """Files whose stripped copy failed its check (the original stays)."""


def strip_tool(arch: str) -> str | None:
    """A strip that understands `arch` (aarch64 or x86_64) objects: GNU strip for the
    host's own architecture, the cross one (aarch64-linux-gnu-strip), or llvm-strip, which
    reads every ELF target."""
    candidates = []
    if platform.machine() == arch:
        candidates.append("strip")
    candidates += [f"{arch}-linux-gnu-strip", "llvm-strip"]
    for candidate in candidates:
        if shutil.which(candidate):
            return candidate
    return None


def strip_binaries(root: Path, arch: str) -> BinaryStrip:
    """`--strip-unneeded` on every ELF shared object under root, each into a copy that
    replaces the original only if it is smaller and its headers still read back."""
    tool = strip_tool(arch)
    result = BinaryStrip(tool)
    if tool is None:
        return result
    reader = shutil.which("readelf") or shutil.which("llvm-readelf")
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "stripped"
        for path in sorted(root.rglob("*.so*")):
            if not path.is_file() or path.is_symlink() or not _is_elf(path):
                continue
            result.files += 1
            done = subprocess.run(
                [tool, "--strip-unneeded", "-o", str(copy), str(path)], capture_output=True
            )
            if done.returncode != 0 or not copy.exists():
                result.kept.append(path.relative_to(root).as_posix())
                continue
            saved = path.stat().st_size - copy.stat().st_size
            if saved <= 0:
                continue
            if (
                reader
                and subprocess.run([reader, "-h", "-d", str(copy)], capture_output=True).returncode
            ):
                result.kept.append(path.relative_to(root).as_posix())
                continue
            mode = path.stat().st_mode
            shutil.move(copy, path)
            path.chmod(mode)
            result.saved_bytes += saved
    return result


def _is_elf(path: Path) -> bool:
    with path.open("rb") as source:
        return source.read(4) == b"\x7fELF"
