"""`stratoserve models build`: run each declared version's recipe, record what it built.

The manifest (build/models/manifest.json) holds, per model version, the recipe's
fingerprint (its source and params), each file's sha256 and size, and the parity figures
the recipe measured. A version whose fingerprint and files still match is skipped, so the
command is cheap to run before every `dev` and every test run.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.recipes import load_recipe
from models.recipes.base import RecipeError
from stratoserve.declaration import models_dir

if TYPE_CHECKING:
    from collections.abc import Callable

    from stratoserve.declaration import Declaration

MANIFEST = "manifest.json"
WORK_DIR = ".work"


class BuildError(Exception):
    """A model could not be built; the message names the model, the version and why."""


@dataclass(frozen=True)
class Outcome:
    model: str
    version: str
    status: str  # built | up to date | no recipe
    seconds: float = 0.0
    metrics: dict[str, Any] | None = None


def build_models(
    declaration: Declaration,
    source: Path,
    names: list[str] | None = None,
    *,
    force: bool = False,
    progress: Callable[[str], None] = lambda _: None,
) -> list[Outcome]:
    unknown = [name for name in names or [] if name not in declaration.models]
    if unknown:
        known = ", ".join(declaration.models)
        raise BuildError(f"unknown model {unknown[0]} (declared: {known})")
    root = models_dir(declaration, source)
    manifest_path = root / MANIFEST
    manifest = _read_manifest(manifest_path)
    outcomes = []
    for name in names or list(declaration.models):
        spec = declaration.models[name]
        for version, version_spec in spec.versions.items():
            files = {"model.onnx": root / version_spec.artifact}
            if version_spec.tokenizer:
                files["tokenizer.json"] = root / version_spec.tokenizer
            if spec.recipe is None:
                absent = [str(path) for path in files.values() if not path.is_file()]
                if absent:
                    raise BuildError(
                        f"{name} version {version}: no recipe and {absent[0]} does not exist; "
                        "put your ONNX file there or declare a recipe"
                    )
                outcomes.append(Outcome(name, version, "no recipe"))
                continue
            fingerprint = _fingerprint(spec.recipe, version_spec.params)
            recorded = manifest.get(name, {}).get(version)
            if not force and _up_to_date(recorded, fingerprint, files):
                outcomes.append(Outcome(name, version, "up to date", metrics=recorded["metrics"]))
                continue
            progress(f"{name} v{version}: building with recipe {spec.recipe}")
            entry = _build_version(
                name, version, spec.recipe, version_spec.params, fingerprint, files, root, progress
            )
            manifest.setdefault(name, {})[version] = entry
            _write_manifest(manifest_path, manifest)
            outcomes.append(
                Outcome(name, version, "built", entry["build_seconds"], entry["metrics"])
            )
    return outcomes


def _build_version(
    name: str,
    version: str,
    recipe: str,
    params: dict[str, Any],
    fingerprint: str,
    files: dict[str, Path],
    root: Path,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """Run the recipe for one version, move its files where the declaration says, and
    return the version's manifest entry."""
    started = time.perf_counter()
    out_dir = files["model.onnx"].parent
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = f"{name} v{version}: "
    try:
        result = load_recipe(recipe).build(
            params, out_dir, root / WORK_DIR, lambda line: progress(prefix + line)
        )
    except (RecipeError, ValueError) as error:
        raise BuildError(f"{name} version {version}: {error}") from None
    missing = sorted(set(files) - set(result.files))
    if missing:
        raise BuildError(f"{name} version {version}: recipe {recipe} wrote no {missing[0]}")
    for file, target in files.items():
        if result.files[file].resolve() != target.resolve():
            result.files[file].replace(target)
    return {
        "recipe": recipe,
        "params": params,
        "fingerprint": fingerprint,
        "files": {
            file: {
                "path": str(path.relative_to(root)),
                "sha256": _sha256(path),
                "size_bytes": path.stat().st_size,
            }
            for file, path in files.items()
        },
        "metrics": result.metrics,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "build_seconds": round(time.perf_counter() - started, 2),
    }


def _fingerprint(recipe: str, params: dict[str, Any]) -> str:
    digest = hashlib.sha256()
    spec = importlib.util.find_spec(f"models.recipes.{recipe}")
    if spec is not None and spec.origin:
        digest.update(Path(spec.origin).read_bytes())
    digest.update(json.dumps([recipe, params], sort_keys=True).encode())
    return digest.hexdigest()[:16]


def _up_to_date(entry: dict[str, Any] | None, fingerprint: str, files: dict[str, Path]) -> bool:
    if not entry or entry.get("fingerprint") != fingerprint:
        return False
    recorded = entry.get("files", {})
    for file, path in files.items():
        if not path.is_file() or file not in recorded:
            return False
        # Size first: a cheap check that catches most edits before hashing 90 MB.
        if path.stat().st_size != recorded[file]["size_bytes"]:
            return False
        if _sha256(path) != recorded[file]["sha256"]:
            return False
    return True


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        content: dict[str, Any] = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    models: dict[str, Any] = content.get("models", {})
    return models


def _write_manifest(path: Path, models: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"models": models}, indent=2, sort_keys=True) + "\n")
    temporary.replace(path)
