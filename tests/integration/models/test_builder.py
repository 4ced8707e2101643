"""`build_models` end to end: the real digits recipe into a declaration under tmp_path."""

from __future__ import annotations

import hashlib
import json
import stat
import sys
from importlib import metadata
from typing import TYPE_CHECKING, Any

import pytest

from models.builder import MANIFEST, BuildError, Outcome, build_models
from models.recipes import RECIPES, load_recipe, recipe_sources
from stratoserve.declaration import Declaration, load_declaration
from stratoserve.declaration import function_environment as variables

if TYPE_CHECKING:
    from pathlib import Path

DIGITS = """
[project]
models_dir = "{models_dir}"

[models.digits]
task = "classify"
recipe = "digits"

[models.digits.versions.1]
artifact = "digits/1/model.onnx"
{params}

[api.v1]
models = {{ digits = "1" }}
"""

OWN_MODEL = """
[models.own]
task = "classify"

[models.own.versions.1]
artifact = "own/1/model.onnx"
"""


class Project:
    """A declaration written to tmp_path, and what a build of it left on disk."""

    def __init__(self, root: Path, *, params: str = "", extra: str = "") -> None:
        self.source = root / "stratoserve.toml"
        self.source.write_text(DIGITS.format(models_dir="models", params=params) + extra)
        self.declaration: Declaration = load_declaration(self.source)
        self.models_dir = root / "models"
        self.artifact = self.models_dir / "digits" / "1" / "model.onnx"
        self.lines: list[str] = []

    def build(self, names: list[str] | None = None, *, force: bool = False) -> list[Outcome]:
        return build_models(
            self.declaration, self.source, names, force=force, progress=self.lines.append
        )

    def manifest(self) -> dict[str, Any]:
        models: dict[str, Any] = json.loads((self.models_dir / MANIFEST).read_text())["models"]
        return models

    def entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = self.manifest()["digits"]["1"]["files"]["model.onnx"]
        return entry


@pytest.fixture(autouse=True)
def _models_dir_from_declaration(monkeypatch: pytest.MonkeyPatch) -> None:
    # A Lambda-style override would send every build below into the real models folder.
    monkeypatch.delenv(variables.MODELS_DIR, raising=False)


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)


def _statuses(outcomes: list[Outcome]) -> list[tuple[str, str, str]]:
    return [(outcome.model, outcome.version, outcome.status) for outcome in outcomes]


# -- builds and the manifest ------------------------------------------------------------


def test_first_build_records_each_file_as_written(project: Project) -> None:
    (outcome,) = project.build()
    assert _statuses([outcome]) == [("digits", "1", "built")]
    assert outcome.metrics is not None and outcome.metrics["accuracy"] >= 0.95
    assert outcome.seconds > 0
    data = project.artifact.read_bytes()
    assert project.entry() == {
        "path": "digits/1/model.onnx",
        "sha256": hashlib.sha256(data).hexdigest(),
        "size_bytes": len(data),
    }
    recorded = project.manifest()["digits"]["1"]
    assert recorded["recipe"] == "digits"
    assert recorded["metrics"] == outcome.metrics
    assert any("building with recipe digits" in line for line in project.lines)
    # The manifest's temp file is renamed into place: nothing else is left beside it, and
    # the manifest is as readable as a plainly written file.
    assert sorted(path.name for path in project.models_dir.iterdir()) == ["digits", MANIFEST]
    assert stat.S_IMODE((project.models_dir / MANIFEST).stat().st_mode) == 0o644


def test_second_build_is_up_to_date_and_leaves_the_file_alone(project: Project) -> None:
    (first,) = project.build()
    mtime_ns = project.artifact.stat().st_mtime_ns
    manifest = project.manifest()
    project.lines.clear()
    (second,) = project.build()
    assert second.status == "up to date"
    assert second.metrics == first.metrics
    assert project.artifact.stat().st_mtime_ns == mtime_ns
    assert project.manifest() == manifest
    assert project.lines == []


def test_tampered_artifact_is_rebuilt(project: Project) -> None:
    project.build()
    recorded = project.entry()
    with project.artifact.open("ab") as stream:
        stream.write(b"\0")
    (outcome,) = project.build()
    assert outcome.status == "built"
    data = project.artifact.read_bytes()
    assert len(data) == recorded["size_bytes"]
    assert hashlib.sha256(data).hexdigest() == project.entry()["sha256"]


def test_same_size_edit_is_caught_by_the_hash(project: Project) -> None:
    project.build()
    data = bytearray(project.artifact.read_bytes())
    data[-1] ^= 0xFF
    project.artifact.write_bytes(bytes(data))
    (outcome,) = project.build()
    assert outcome.status == "built"
    assert hashlib.sha256(project.artifact.read_bytes()).hexdigest() == project.entry()["sha256"]


def test_force_rebuilds_an_up_to_date_version(project: Project) -> None:
    project.build()
    mtime_ns = project.artifact.stat().st_mtime_ns
    (outcome,) = project.build(force=True)
    assert outcome.status == "built"
    assert project.artifact.stat().st_mtime_ns > mtime_ns
    assert project.entry()["sha256"] == hashlib.sha256(project.artifact.read_bytes()).hexdigest()


def test_changed_params_rebuild(tmp_path: Path) -> None:
    first = Project(tmp_path)
    first.build()
    fingerprint = first.manifest()["digits"]["1"]["fingerprint"]
    reseeded = Project(tmp_path, params="params = { seed = 1 }")
    (outcome,) = reseeded.build()
    assert outcome.status == "built"
    recorded = reseeded.manifest()["digits"]["1"]
    assert recorded["params"] == {"seed": 1}
    assert recorded["fingerprint"] != fingerprint


# -- what the fingerprint covers --------------------------------------------------------


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_declared_source_packages_are_installed_distributions(recipe: str) -> None:
    packages = load_recipe(recipe).SOURCE_PACKAGES
    assert "onnxruntime" in packages
    # A misspelt name would be fingerprinted as "not installed" and never change.
    for package in packages:
        assert metadata.version(package)


def test_recipe_sources_include_helpers_and_the_base() -> None:
    names = {recipe: [path.name for path in recipe_sources(recipe)] for recipe in RECIPES}
    assert names == {
        "digits": ["digits.py", "base.py"],
        "minilm": ["minilm.py", "minilm_parity.py", "base.py"],
    }
    assert all(path.is_file() for recipe in RECIPES for path in recipe_sources(recipe))


# -- failures ---------------------------------------------------------------------------


def test_unknown_model_names_the_declared_ones(project: Project) -> None:
    with pytest.raises(BuildError, match=r"^unknown model resnet \(declared: digits\)$"):
        project.build(["resnet"])
    assert not project.models_dir.exists()


def test_model_without_recipe_needs_its_file(tmp_path: Path) -> None:
    project = Project(tmp_path, extra=OWN_MODEL)
    expected = project.models_dir / "own" / "1" / "model.onnx"
    with pytest.raises(BuildError) as caught:
        project.build(["own"])
    assert str(caught.value) == (
        f"own version 1: no recipe and {expected} does not exist; "
        "put your ONNX file there or declare a recipe"
    )
    expected.parent.mkdir(parents=True)
    expected.write_bytes(b"brought by the user")
    assert _statuses(project.build(["own"])) == [("own", "1", "no recipe")]


def test_recipe_error_becomes_build_error(tmp_path: Path) -> None:
    project = Project(tmp_path, params='params = { seed = "not-an-int" }')
    with pytest.raises(BuildError) as caught:
        project.build()
    assert str(caught.value) == (
        "digits version 1: param 'seed' must be an integer, got 'not-an-int'"
    )
    assert not project.artifact.exists()
    assert not (project.models_dir / MANIFEST).exists()


def test_unexpected_error_becomes_one_line_build_error(tmp_path: Path) -> None:
    # models_dir is a regular file, so creating the version's folder fails with an OSError.
    (tmp_path / "models").write_text("not a folder")
    project = Project(tmp_path)
    with pytest.raises(BuildError) as caught:
        project.build()
    message = str(caught.value)
    assert message.startswith("digits version 1: NotADirectoryError: ")
    assert str(tmp_path / "models") in message
    assert "\n" not in message
    assert "pip install" not in message  # the hint is for missing modules only
    # Raised `from None`: the CLI prints the line, with no chained traceback to show.
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def test_missing_module_gets_the_install_hint(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    # None in sys.modules is how Python is told a module cannot be imported: the recipe's
    # own `from skl2onnx import ...` then fails for real, as without the models extra.
    monkeypatch.setitem(sys.modules, "skl2onnx", None)
    with pytest.raises(BuildError) as caught:
        project.build()
    assert str(caught.value) == (
        "digits version 1: ModuleNotFoundError: import of skl2onnx halted; None in "
        "sys.modules (install the models extra: pip install -e '.[models]')"
    )
    assert not project.artifact.exists()
