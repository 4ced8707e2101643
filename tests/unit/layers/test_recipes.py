"""Which function carries which layer, from the declaration alone."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

from layers.recipes import (
    ModelsLayer,
    PipLayer,
    function_layers,
    layer_recipes,
)
from stratoserve.declaration import load_declaration
from tests.unit.stratoserve.declaration.minimal import MINIMAL

if TYPE_CHECKING:
    from pathlib import Path

    from stratoserve.declaration import Declaration

EXTRAS = {
    "runtime": [
        "onnxruntime>=1.20",
        "numpy>=1.26",
        "tokenizers>=0.20",
        "fastapi>=0.115",
        "orjson>=3.10",
        "mangum>=0.19",
        "aws-lambda-powertools>=3.0",
        "pydantic-settings>=2.3",
    ],
    "gpu": ["modal==1.6.4"],
}


def _declaration(tmp_path: Path, extra: str = "") -> Declaration:
    path = tmp_path / "stratoserve.toml"
    path.write_text(MINIMAL + textwrap.dedent(extra))
    return load_declaration(path)


def test_the_shipped_declaration(declaration: Declaration) -> None:
    assert function_layers(declaration) == {
        "api": ("runtime",),
        "digits": ("runtime", "onnx", "models-digits"),
        "embed": ("runtime", "onnx", "models-embed"),
        "worker": ("runtime", "onnx", "modal", "models-worker"),
    }
    recipes = layer_recipes(declaration, EXTRAS)
    embed = recipes["models-embed"]
    assert isinstance(embed, ModelsLayer)
    # every version some API version serves: v1 serves embed 1, v2 serves embed 2
    assert embed.files == (
        "embed/1/model.onnx",
        "embed/1/tokenizer.json",
        "embed/2/model.onnx",
        "embed/2/tokenizer.json",
    )
    worker = recipes["models-worker"]
    assert isinstance(worker, ModelsLayer)
    assert set(worker.files) == {"digits/1/model.onnx", *embed.files}


def test_pip_layers_split_the_runtime_extra(declaration: Declaration) -> None:
    recipes = layer_recipes(declaration, EXTRAS)
    runtime, onnx, modal = recipes["runtime"], recipes["onnx"], recipes["modal"]
    assert isinstance(runtime, PipLayer) and isinstance(onnx, PipLayer)
    assert isinstance(modal, PipLayer)
    assert runtime.requirements == (
        "fastapi>=0.115",
        "orjson>=3.10",
        "mangum>=0.19",
        "aws-lambda-powertools>=3.0",
        "pydantic-settings>=2.3",
    )
    assert onnx.requirements == ("onnxruntime>=1.20", "numpy>=1.26", "tokenizers>=0.20")
    assert "huggingface-hub" in onnx.pruned
    assert "onnxruntime/transformers" in onnx.drop_paths
    assert modal.requirements == ("modal==1.6.4",)


def test_without_gpu_there_is_no_modal_layer(tmp_path: Path) -> None:
    declaration = _declaration(tmp_path)
    assert declaration.gpu is None
    assert function_layers(declaration) == {
        "api": ("runtime",),
        "digits": ("runtime", "onnx", "models-digits"),
        "worker": ("runtime", "onnx", "models-worker"),
    }
    assert "modal" not in layer_recipes(declaration, EXTRAS)


def test_grouped_models_share_one_models_layer(tmp_path: Path) -> None:
    declaration = _declaration(
        tmp_path,
        """
        [models.other]
        task = "classify"
        [models.other.versions.1]
        artifact = "other/1/model.onnx"
        [models.other.versions.2]
        artifact = "other/2/model.onnx"
        [api.v2]
        models = { digits = "1", other = "2" }
        [functions.small]
        models = ["digits", "other"]
        architecture = "x86_64"
        """,
    )
    assert function_layers(declaration)["small"] == ("runtime", "onnx", "models-small")
    small = layer_recipes(declaration, EXTRAS)["models-small"]
    # other v1 is declared but no API version serves it: it does not ship
    assert isinstance(small, ModelsLayer)
    assert small.files == ("digits/1/model.onnx", "other/2/model.onnx")


def test_a_missing_runtime_extra_is_named(declaration: Declaration) -> None:
    import pytest

    with pytest.raises(ValueError, match="no `runtime` extra"):
        layer_recipes(declaration, {"gpu": ["modal==1.6.4"]})
