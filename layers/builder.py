"""Building the layers, without Docker: pip installs wheels for Lambda's platform into
build/layers/<arch>/<name>/python, the tree is trimmed (strip.py), compiled with the
target Python, and zipped deterministically (archive.py). A stamp skips an up-to-date
layer. The report gives every layer's size and every function's against Lambda's limits."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layers import limits
from layers.archive import sha256_of, tree_entries, unzipped_bytes, write_zip
from layers.packages import CodeBuild, build_code, stage_image
from layers.pins import PinError, pin, target_environment
from layers.recipes import (
    ANY_ARCH,
    ARCHITECTURES,
    MODELS_FOLDER,
    NOT_SHIPPED,
    ModelsLayer,
    PipLayer,
    function_architectures,
    function_layers,
    function_packages,
    layer_recipes,
)
from layers.strip import strip_binaries, strip_tool, strip_tree
from stratoserve.declaration import models_dir

if TYPE_CHECKING:
    from collections.abc import Callable

    from stratoserve.declaration import Declaration

BUILDER_VERSION = 2
"""Part of every stamp: bump it when the build steps change what a layer holds."""
TARGET_PYTHON = "3.12"
"""Lambda's python3.12 runtime (Amazon Linux 2023, glibc 2.34: manylinux_2_28 wheels)."""
GLIBC_MINOR = 28
"""manylinux_2_28: pip does not widen a --platform to the older tags it implies, so each
is named, down to manylinux2014 (glibc 2.17), as a 2.28 system accepts them all."""
ROOT = Path(__file__).resolve().parents[1]
"""The project: pyproject.toml and the code every function ships (functions/, the loader)."""
PYTHON_ENV = "STRATOSERVE_LAYER_PYTHON"
"""An interpreter of the target Python to compile with, when it is not found on its own."""


class LayerError(Exception):
    """A layer that cannot be built: one line that says why and what to do."""


@dataclass
class LayerBuild:
    name: str
    arch: str
    """aarch64, x86_64, or any (models layers: data only)."""
    zip: str
    unzipped_bytes: int
    zipped_bytes: int
    sha256: str
    status: str = "built"
    """built, or up to date (the stamp matched; the figures are the last build's)."""
    seconds: float = 0.0
    packages: dict[str, str] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)
    removed_bytes: dict[str, int] = field(default_factory=dict)
    """What trimming removed, by rule (strip_tree's, and "debug symbols")."""
    strip_tool: str | None = None
    compiled_with: str | None = None
    """The interpreter version that wrote __pycache__, or None if none was found."""
    notes: list[str] = field(default_factory=list)


@dataclass
class FunctionReport:
    name: str
    architecture: str
    package: str
    """zip (code + layers) or image (built from image_context by `cdk deploy`)."""
    layers: list[str]
    layer_zips: list[str]
    """The zips of `layers`, in attachment order."""
    code_zip: str
    image_context: str | None
    code_bytes: int
    unzipped_bytes: int
    problems: list[str]


@dataclass
class BuildReport:
    layers: list[LayerBuild]
    code: CodeBuild
    functions: list[FunctionReport]
    notes: list[str]
    problems: list[str]
    """One line per function over a limit: the command exits non-zero when any."""

    def to_json(self) -> dict[str, Any]:
        return {
            "builder_version": BUILDER_VERSION,
            "target_python": TARGET_PYTHON,
            "limits": {
                "unzipped_bytes": limits.UNZIPPED_LIMIT,
                "direct_upload_zipped_bytes": limits.DIRECT_UPLOAD_LIMIT,
                "layers_per_function": limits.MAX_LAYERS,
            },
            "layers": [asdict(layer) for layer in self.layers],
            "code": asdict(self.code),
            "functions": [asdict(function) for function in self.functions],
            "notes": self.notes,
            "problems": self.problems,
        }


def build_layers(
    declaration: Declaration,
    source: Path,
    *,
    output: Path | None = None,
    architecture: str | None = None,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> BuildReport:
    """Build the layers of every function (of one Lambda architecture, if given) and
    check each function's size. Two builds at once (two synths) take turns."""
    output = output or source.parent / "build" / "layers"
    output.mkdir(parents=True, exist_ok=True)
    with (output / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build_layers(declaration, source, output, architecture, force, progress)


def _build_layers(
    declaration: Declaration,
    source: Path,
    output: Path,
    architecture: str | None,
    force: bool,
    progress: Callable[[str], None] | None,
) -> BuildReport:
    architectures = function_architectures(declaration)
    chosen = {
        name: arch
        for name, arch in architectures.items()
        if architecture is None or arch == architecture
    }
    if not chosen:
        raise LayerError(f"no function is declared with architecture {architecture}")
    try:
        recipes = layer_recipes(declaration, project_extras())
    except ValueError as error:
        raise LayerError(str(error)) from None
    assignment = function_layers(declaration)
    built: dict[tuple[str, str], LayerBuild] = {}
    for function, arch in chosen.items():
        for name in assignment[function]:
            recipe = recipes[name]
            target = ARCHITECTURES[arch] if isinstance(recipe, PipLayer) else ANY_ARCH
            if (name, target) in built:
                continue
            if isinstance(recipe, PipLayer):
                layer = build_pip_layer(recipe, target, output, force=force, progress=progress)
            else:
                layer = build_models_layer(
                    recipe, models_dir(declaration, source), output, force=force
                )
            built[(name, target)] = layer
    code = build_code(function_code_files(source), output, target_python(), compile_for_lambda)
    packages = function_packages(declaration)
    functions = []
    problems = []
    for function, arch in chosen.items():
        layers = [built[(name, _target(recipes[name], arch))] for name in assignment[function]]
        sizes = limits.FunctionSize(
            function,
            arch,
            code.unzipped_bytes,
            tuple((layer.name, layer.unzipped_bytes) for layer in layers),
            packages[function],
        )
        found = limits.function_problems(sizes)
        problems += found
        context = None
        if packages[function] == "image":
            layer_zips = [Path(layer.zip) for layer in layers]
            context = str(stage_image(function, layer_zips, Path(code.zip), output))
        functions.append(
            FunctionReport(
                name=function,
                architecture=arch,
                package=packages[function],
                layers=list(assignment[function]),
                layer_zips=[layer.zip for layer in layers],
                code_zip=code.zip,
                image_context=context,
                code_bytes=code.unzipped_bytes,
                unzipped_bytes=sizes.unzipped_bytes,
                problems=found,
            )
        )
    notes = [
        note
        for layer in built.values()
        if (note := limits.layer_note(layer.name, layer.arch, layer.zipped_bytes))
    ]
    return BuildReport(list(built.values()), code, functions, notes, problems)


def _target(recipe: PipLayer | ModelsLayer, arch: str) -> str:
    return ARCHITECTURES[arch] if isinstance(recipe, PipLayer) else ANY_ARCH


def project_extras() -> dict[str, list[str]]:
    path = ROOT / "pyproject.toml"
    try:
        project = tomllib.loads(path.read_text())["project"]
    except (OSError, KeyError, tomllib.TOMLDecodeError) as error:
        raise LayerError(f"{path}: cannot read the project's extras ({error})") from None
    extras: dict[str, list[str]] = project.get("optional-dependencies", {})
    return extras


# --- pip layers ----------------------------------------------------------------------


def build_pip_layer(
    recipe: PipLayer,
    arch: str,
    output: Path,
    *,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> LayerBuild:
    """pip-install the recipe's pinned closure for Lambda's platform, trim, compile, zip."""
    say = progress or (lambda _: None)
    started = time.perf_counter()
    try:
        pins = pin(
            recipe.requirements,
            target_environment(arch, TARGET_PYTHON),
            leave_out={**NOT_SHIPPED, **recipe.pruned},
        )
    except PinError as error:
        raise LayerError(f"layer {recipe.name}: {error}") from None
    python = target_python()
    tool = strip_tool(arch)
    stamp = _stamp(
        {
            "builder": BUILDER_VERSION,
            "arch": arch,
            "python": python[1] if python else None,
            "packages": pins.versions,
            "excluded": sorted(pins.excluded),
            "drop": list(recipe.drop_paths),
            "strip": tool,
        }
    )
    archive = output / arch / f"{recipe.name}.zip"
    previous = _up_to_date(archive, stamp)
    if previous is not None and not force:
        return previous
    folder = output / arch / recipe.name
    if folder.exists():
        shutil.rmtree(folder)
    site = folder / "python"
    site.mkdir(parents=True)
    say(f"{recipe.name} ({arch}): pip install {len(pins.versions)} packages")
    _pip_install(recipe.name, arch, site, pins.specifiers())
    say(f"{recipe.name} ({arch}): trimming")
    summary = strip_tree(site, recipe.drop_paths)
    binaries = strip_binaries(site, arch)
    removed = dict(summary.removed_bytes)
    if binaries.saved_bytes:
        removed["debug symbols"] = binaries.saved_bytes
    notes = [f"left out {name}: {why}" for name, why in sorted(pins.excluded.items())]
    if tool is None:
        notes.append(f"no strip for {arch} objects on this machine: debug symbols kept")
    if binaries.kept:
        notes.append(f"{tool} left unchanged (its output failed to read back): {binaries.kept}")
    if python is None:
        notes.append(
            f"no Python {TARGET_PYTHON} found (set ${PYTHON_ENV}): not byte-compiled, so "
            "Lambda compiles on every cold start"
        )
    else:
        say(f"{recipe.name} ({arch}): compiling with Python {python[1]}")
        notes += compile_for_lambda(python[0], site)
    say(f"{recipe.name} ({arch}): zipping")
    entries = tree_entries(site, "python")
    digest = write_zip(entries, archive)
    layer = LayerBuild(
        name=recipe.name,
        arch=arch,
        zip=str(archive),
        unzipped_bytes=unzipped_bytes(entries),
        zipped_bytes=archive.stat().st_size,
        sha256=digest,
        seconds=round(time.perf_counter() - started, 1),
        packages=dict(sorted(pins.versions.items())),
        excluded=dict(sorted(pins.excluded.items())),
        removed_bytes=removed,
        strip_tool=tool,
        compiled_with=python[1] if python else None,
        notes=notes,
    )
    _write_stamp(archive, stamp, layer)
    return layer


def _pip_install(name: str, arch: str, site: Path, requirements: list[str]) -> None:
    command = [
        sys.executable, "-m", "pip", "install",
        *platform_options(arch),
        "--python-version", TARGET_PYTHON,
        "--implementation", "cp",
        "--only-binary=:all:",
        "--no-deps",  # the pins are the whole closure, resolved from this environment
        "--no-compile",
        "--target", str(site),
        "--disable-pip-version-check",
        "--no-warn-script-location",
        "--quiet",
        *requirements,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
        reason = lines[-1] if lines else (done.stderr.strip().splitlines() or ["?"])[-1]
        raise LayerError(f"layer {name} ({arch}): pip could not install it: {reason}")


def platform_options(arch: str) -> list[str]:
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(GLIBC_MINOR, 16, -1)]
    tags.append(f"manylinux2014_{arch}")
    return [option for tag in tags for option in ("--platform", tag)]


def target_python() -> tuple[str, str] | None:
    """(interpreter, version) of a Python 3.12 to compile with: ${PYTHON_ENV}, python3.12
    on PATH, or pyenv's newest 3.12."""
    candidates = [os.environ.get(PYTHON_ENV, ""), shutil.which(f"python{TARGET_PYTHON}") or ""]
    pyenv_root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    installed = Path(pyenv_root, "versions").glob(f"{TARGET_PYTHON}.*/bin/python{TARGET_PYTHON}")
    candidates += [
        str(path)
        for path in sorted(
            installed,
            key=lambda path: [int(part) for part in path.parts[-3].split(".") if part.isdigit()],
            reverse=True,
        )
    ]
    for candidate in filter(None, candidates):
        try:
            done = subprocess.run(
                [candidate, "-c", "import platform; print(platform.python_version())"],
                capture_output=True,
                text=True,
                timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        version = done.stdout.strip()
        if done.returncode == 0 and version.startswith(TARGET_PYTHON + "."):
            return candidate, version
    return None


def compile_for_lambda(python: str, site: Path, prefix: str = "/opt/python") -> list[str]:
    """__pycache__ for the target Python. unchecked-hash: Lambda's /opt and /var/task are
    read-only and the zip's timestamps are fixed, so a timestamp check would always fail
    and recompile; the source paths recorded are the ones Lambda sees (`prefix`/...)."""
    command = [
        python, "-m", "compileall", "-q", "-j", "0",
        "--invalidation-mode", "unchecked-hash",
        "-s", str(site), "-p", prefix,
        str(site),
    ]  # fmt: skip
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    if done.returncode == 0:
        return []
    failed = [line for line in done.stdout.splitlines() if line.startswith("***")]
    return [f"compileall could not compile {len(failed) or 'some'} file(s); left as source"]


# --- models layers -------------------------------------------------------------------


def build_models_layer(
    recipe: ModelsLayer, models_root: Path, output: Path, *, force: bool = False
) -> LayerBuild:
    """The served artifacts under stratoserve-models/, zipped straight from models_dir."""
    started = time.perf_counter()
    missing = [name for name in recipe.files if not (models_root / name).is_file()]
    if missing:
        raise LayerError(
            f"layer {recipe.name}: {models_root / missing[0]} is missing: "
            "run `stratoserve models build` first"
        )
    entries = [(f"{MODELS_FOLDER}/{name}", models_root / name) for name in recipe.files]
    stamp = _stamp(
        {
            "builder": BUILDER_VERSION,
            "files": {name: sha256_of(path) for name, path in entries},
        }
    )
    archive = output / ANY_ARCH / f"{recipe.name}.zip"
    previous = _up_to_date(archive, stamp)
    if previous is not None and not force:
        return previous
    digest = write_zip(entries, archive)
    layer = LayerBuild(
        name=recipe.name,
        arch=ANY_ARCH,
        zip=str(archive),
        unzipped_bytes=unzipped_bytes(entries),
        zipped_bytes=archive.stat().st_size,
        sha256=digest,
        seconds=round(time.perf_counter() - started, 1),
        notes=[f"holds {', '.join(recipe.files)}"],
    )
    _write_stamp(archive, stamp, layer)
    return layer


# --- stamps and the function's own code ------------------------------------------------


def _stamp(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def _stamp_path(archive: Path) -> Path:
    return archive.with_name(archive.name.removesuffix(".zip") + ".stamp.json")


def _up_to_date(archive: Path, stamp: str) -> LayerBuild | None:
    """The last build's figures if its stamp matches and its zip is the one it wrote."""
    try:
        record = json.loads(_stamp_path(archive).read_text())
        layer = LayerBuild(**record["layer"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if record.get("stamp") != stamp or not archive.is_file():
        return None
    if sha256_of(archive) != layer.sha256:
        return None
    layer.status = "up to date"
    return layer


def _write_stamp(archive: Path, stamp: str, layer: LayerBuild) -> None:
    record = {"stamp": stamp, "layer": asdict(layer)}
    _stamp_path(archive).write_text(json.dumps(record, indent=2) + "\n")


def function_code_files(declaration_file: Path) -> list[tuple[str, Path]]:
    """What every function's own zip holds: functions/, the loader (stratoserve/__init__.py
    and stratoserve/declaration/) and the declaration."""
    files = [
        (path.relative_to(ROOT).as_posix(), path)
        for folder in ("functions", "stratoserve/declaration")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if "__pycache__" not in path.parts
    ]
    files.append(("stratoserve/__init__.py", ROOT / "stratoserve" / "__init__.py"))
    files.append(("stratoserve.toml", declaration_file))
    return files


def function_code_bytes(declaration_file: Path) -> int:
    return unzipped_bytes(function_code_files(declaration_file))
