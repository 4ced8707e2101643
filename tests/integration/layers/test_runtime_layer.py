"""One real layer build: the small `runtime` layer for arm64 (aarch64), with pip from the
package index, once per test session. Nothing is imported from it (it is for another
platform); its tree and zip are inspected."""

from __future__ import annotations

import time
import zipfile
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from layers.archive import sha256_of, tree_entries, write_zip
from layers.builder import build_pip_layer, project_extras
from layers.recipes import PipLayer, layer_recipes

if TYPE_CHECKING:
    from pathlib import Path

    from layers.builder import LayerBuild
    from stratoserve.declaration import Declaration


@dataclass
class Built:
    first: LayerBuild
    second: LayerBuild
    output: Path
    seconds: float


@pytest.fixture(scope="session")
def built(declaration: Declaration, tmp_path_factory: pytest.TempPathFactory) -> Built:
    recipe = layer_recipes(declaration, project_extras())["runtime"]
    assert isinstance(recipe, PipLayer)
    output = tmp_path_factory.mktemp("layers")
    started = time.perf_counter()
    first = build_pip_layer(recipe, "aarch64", output)
    seconds = time.perf_counter() - started
    second = build_pip_layer(recipe, "aarch64", output)
    return Built(first, second, output, seconds)


def _names(built: Built) -> list[str]:
    with zipfile.ZipFile(built.first.zip) as archive:
        return archive.namelist()


def test_no_boto3_and_no_tests(built: Built) -> None:
    tops = {name.split("/")[1] for name in _names(built)}
    assert not {"boto3", "botocore", "s3transfer", "bin"} & tops
    assert {"fastapi", "mangum", "aws_lambda_powertools", "pydantic_core", "orjson"} <= tops
    assert not [name for name in _names(built) if {"tests", "test"} & set(name.split("/")[2:])]
    assert not {"boto3", "botocore"} & set(built.first.packages)


def test_compiled_for_the_target_python_only(built: Built) -> None:
    compiled = [name for name in _names(built) if name.endswith(".pyc")]
    if built.first.compiled_with is None:
        assert compiled == []
        pytest.skip("no Python 3.12 on this machine: the layer ships source only")
    assert compiled
    assert all(".cpython-312." in name for name in compiled)
    assert not [name for name in _names(built) if name.endswith(".pyi")]


def test_metadata_kept_for_importlib(built: Built) -> None:
    names = _names(built)
    assert any(
        name.startswith("python/fastapi-") and name.endswith(".dist-info/METADATA")
        for name in names
    )
    for name in names:
        if ".dist-info/" in name:
            assert name.rsplit("/", 1)[1] in {"METADATA", "RECORD", "top_level.txt"} or (
                "licen" in name.lower() or "copying" in name.lower() or "notice" in name.lower()
            ), name


def test_deterministic_and_skipped_when_up_to_date(built: Built, tmp_path: Path) -> None:
    assert built.first.status == "built"
    assert built.second.status == "up to date"
    assert (
        built.second.sha256
        == built.first.sha256
        == sha256_of(built.output / "aarch64" / "runtime.zip")
    )
    # the same tree zipped again elsewhere gives the same bytes
    again = write_zip(
        tree_entries(built.output / "aarch64" / "runtime" / "python", "python"),
        tmp_path / "again.zip",
    )
    assert again == built.first.sha256


def test_sizes_reported(built: Built) -> None:
    layer = built.first
    assert 5 << 20 < layer.unzipped_bytes < 60 << 20
    assert 1 << 20 < layer.zipped_bytes < layer.unzipped_bytes
    assert layer.packages["fastapi"] and layer.packages["aws-lambda-powertools"]
    mib = 1 << 20
    print(
        f"runtime layer (aarch64): built in {built.seconds:.1f} s, "
        f"{layer.unzipped_bytes / mib:.1f} MB unzipped, {layer.zipped_bytes / mib:.1f} MB zipped"
    )
