"""`stratoserve models build`: run each declared version's recipe, record what it built.

The manifest (build/models/manifest.json) holds, per model version, the recipe's
fingerprint (its source files, the versions of the packages it declares, and params),
each file's sha256 and size, and the parity figures the recipe measured. A version whose
fingerprint and files still match is skipped, so the command is cheap to run before every
`dev` and every test run.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.recipes import load_recipe, recipe_sources
from models.recipes.base import RecipeError, file_sha256
from stratoserve.declaration import models_dir

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from stratoserve.declaration import Declaration

MANIFEST = "manifest.json"
WORK_DIR = ".work"
MODELS_EXTRA_HINT = "install the models extra: pip install -e '.[models]'"


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
            job = _Job(name, version, spec.recipe, version_spec.params, files, root)
            with _failures_named(name, version):
                outcomes.append(_ensure_built(job, force, progress))
    return outcomes


@dataclass(frozen=True)
class _Job:
    """One model version to build with a recipe, and where its files belong."""

    name: str
    version: str
    recipe: str
    params: dict[str, Any]
    files: dict[str, Path]
    root: Path


def _ensure_built(job: _Job, force: bool, progress: Callable[[str], None]) -> Outcome:
    manifest_path = job.root / MANIFEST
    # Read afresh for each version, so that a build of another model running meanwhile
    # keeps the entries it recorded when this one writes the manifest back.
    manifest = _read_manifest(manifest_path)
    fingerprint = _fingerprint(job.recipe, job.params)
    recorded = manifest.get(job.name, {}).get(job.version)
    if not force and _up_to_date(recorded, fingerprint, job.files):
        return Outcome(job.name, job.version, "up to date", metrics=recorded["metrics"])
    progress(f"{job.name} v{job.version}: building with recipe {job.recipe}")
    entry = _build_version(job, fingerprint, progress)
    manifest = _read_manifest(manifest_path)
    manifest.setdefault(job.name, {})[job.version] = entry
    _write_manifest(manifest_path, manifest)
    return Outcome(job.name, job.version, "built", entry["build_seconds"], entry["metrics"])


def _build_version(job: _Job, fingerprint: str, progress: Callable[[str], None]) -> dict[str, Any]:
    """Run the recipe for one version, move its files where the declaration says, and
    return the version's manifest entry."""
    started = time.perf_counter()
    out_dir = job.files["model.onnx"].parent
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = f"{job.name} v{job.version}: "
    result = load_recipe(job.recipe).build(
        job.params, out_dir, job.root / WORK_DIR, lambda line: progress(prefix + line)
    )
    missing = sorted(set(job.files) - set(result.files))
    if missing:
        raise BuildError(
            f"{job.name} version {job.version}: recipe {job.recipe} wrote no {missing[0]}"
        )
    for file, target in job.files.items():
        if result.files[file].resolve() != target.resolve():
            result.files[file].replace(target)
    return {
        "recipe": job.recipe,
        "params": job.params,
        "fingerprint": fingerprint,
        "files": {
            file: {
                "path": str(path.relative_to(job.root)),
                "sha256": file_sha256(path),
                "size_bytes": path.stat().st_size,
            }
            for file, path in job.files.items()
        },
        "metrics": result.metrics,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "build_seconds": round(time.perf_counter() - started, 2),
    }


@contextmanager
def _failures_named(name: str, version: str) -> Iterator[None]:
    """Turn any failure while building one version into a one-line BuildError naming it.

    A recipe's own RecipeError (or ValueError, e.g. an unknown recipe) already says what is
    wrong; anything else (a missing package, an onnxruntime failure, a full disk) is
    unexpected, so its type is kept in the message.
    """
    try:
        yield
    except BuildError:
        raise
    except (RecipeError, ValueError) as error:
        raise BuildError(f"{name} version {version}: {_one_line(str(error))}") from None
    except Exception as error:
        cause = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        hint = f" ({MODELS_EXTRA_HINT})" if isinstance(error, ImportError) else ""
        raise BuildError(f"{name} version {version}: {_one_line(cause)}{hint}") from None


def _one_line(text: str) -> str:
    # onnxruntime and protobuf errors span lines; the CLI prints a BuildError as one.
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _fingerprint(recipe: str, params: dict[str, Any]) -> str:
    """What decides a version's artifact: the recipe's source files (see recipe_sources),
    its params and the installed versions of the packages it declares.

    Versions come from package metadata so that checking an up-to-date build never imports
    torch or onnxruntime; a package that is not installed is recorded as such, and the
    build then fails with the recipe's own ImportError.
    """
    packages = load_recipe(recipe).SOURCE_PACKAGES
    digest = hashlib.sha256()
    for path in recipe_sources(recipe):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    versions = {package: _installed_version(package) for package in packages}
    digest.update(json.dumps([recipe, params, versions], sort_keys=True).encode())
    return digest.hexdigest()[:16]


def _installed_version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


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
        if file_sha256(path) != recorded[file]["sha256"]:
            return False
    return True


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        content: dict[str, Any] = json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return {}
    models: dict[str, Any] = content.get("models", {})
    return models


def _write_manifest(path: Path, models: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique temp file beside the manifest: two builds at once never write into each
    # other's temp file, and the rename stays on one filesystem, so it is atomic.
    stream = tempfile.NamedTemporaryFile(  # noqa: SIM115  the with below closes it
        "w",
        encoding="utf-8",
        dir=path.parent,
        prefix=f".{path.stem}.",
        suffix=".tmp",
        delete=False,
    )
    temporary = Path(stream.name)
    try:
        with stream:
            stream.write(json.dumps({"models": models}, indent=2, sort_keys=True) + "\n")
        # NamedTemporaryFile creates it owner-only; keep the manifest readable as before.
        temporary.chmod(0o644)
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)
