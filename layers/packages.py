"""What each function deploys besides its layers: its code, and for `package = "image"`
the build context of its container image.

- The code zip: functions/, the loader and the declaration (`function_code_files`),
  byte-compiled for Lambda's Python with the paths Lambda sees (/var/task/...). Every zip
  function ships the same one; the handler and STRATOSERVE_FUNCTION tell them apart.
- An image context (build/layers/images/<function>/): functions/Dockerfile, the code zip
  and the function's layer zips in attachment order, so the image holds the same bytes a
  zip function would, unpacked where Lambda unpacks them (/opt, /var/task). `cdk deploy`
  builds it where Docker runs; `cdk synth` only stages it.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from layers.archive import sha256_of, unzipped_bytes, write_zip

if TYPE_CHECKING:
    from collections.abc import Callable

CODE_ROOT = "/var/task"
"""Where Lambda puts a zip function's code (and the image's LAMBDA_TASK_ROOT)."""
DOCKERFILE = Path(__file__).resolve().parents[1] / "functions" / "Dockerfile"


@dataclass
class CodeBuild:
    zip: str
    sha256: str
    unzipped_bytes: int
    zipped_bytes: int
    compiled_with: str | None


def build_code(
    files: list[tuple[str, Path]],
    output: Path,
    python: tuple[str, str] | None,
    compile_tree: Callable[[str, Path, str], list[str]],
) -> CodeBuild:
    """Zip the functions' code, compiled by `python` (interpreter, version) where given.
    Made every time (it is small) and deterministic: the same tree gives the same bytes,
    and then the file is left alone, so its CDK asset and the links to it stay valid."""
    archive = output / "any" / "code.zip"
    with tempfile.TemporaryDirectory(prefix="stratoserve-code-") as staging:
        root = Path(staging) / "code"
        for name, path in files:
            target = root / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        notes = compile_tree(python[0], root, CODE_ROOT) if python else []
        entries = [
            (path.relative_to(root).as_posix(), path) for path in root.rglob("*") if path.is_file()
        ]
        fresh = Path(staging) / "code.zip"
        digest = write_zip(entries, fresh)
        size = unzipped_bytes(entries)
        if not archive.is_file() or sha256_of(archive) != digest:
            archive.parent.mkdir(parents=True, exist_ok=True)
            partial = archive.with_name(f"code.zip.{os.getpid()}.partial")
            shutil.copyfile(fresh, partial)
            partial.replace(archive)
    return CodeBuild(
        zip=str(archive),
        sha256=digest,
        unzipped_bytes=size,
        zipped_bytes=archive.stat().st_size,
        compiled_with=python[1] if python and not notes else None,
    )


def stage_image(function: str, layer_zips: list[Path], code_zip: Path, output: Path) -> Path:
    """The build context of `function`'s image: the Dockerfile, the code zip and the layer
    zips, numbered in attachment order (a later layer's files win, as in /opt on Lambda).
    Zips are hard-linked where the file system allows, so staging costs no copy; a context
    that already holds exactly these files is left as it is (another synth may read it)."""
    context = output / "images" / function
    wanted = {"Dockerfile": DOCKERFILE, "code.zip": code_zip} | {
        f"layers/{index:02d}-{layer.name}": layer for index, layer in enumerate(layer_zips, 1)
    }
    if _holds(context, wanted):
        return context
    if context.exists():
        shutil.rmtree(context)
    (context / "layers").mkdir(parents=True)
    shutil.copyfile(DOCKERFILE, context / "Dockerfile")
    for name, source in wanted.items():
        if name != "Dockerfile":
            _link(source, context / name)
    return context


def _holds(context: Path, wanted: dict[str, Path]) -> bool:
    """Whether `context` has exactly these files, with these contents."""
    if not context.is_dir():
        return False
    present = {
        path.relative_to(context).as_posix() for path in context.rglob("*") if path.is_file()
    }
    return present == set(wanted) and all(
        (context / name).samefile(source) or filecmp.cmp(context / name, source, shallow=False)
        for name, source in wanted.items()
    )


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
