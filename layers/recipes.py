"""Layer recipes and which function gets which layer: pure functions of the declaration
and the project's extras (pyproject.toml), so the CDK app and the builder agree.

- `runtime`: what every function imports (FastAPI, Mangum, Powertools, pydantic, orjson):
  the `runtime` extra without the model packages.
- `onnx`: onnxruntime, numpy, tokenizers, for the functions that serve models and the worker.
- `modal`: the Modal client, for the worker only, and only when the declaration has [gpu].
- `models-<function>`: the artifacts of every version some API version serves of the
  function's models, under `stratoserve-models/` (/opt/stratoserve-models on Lambda: the
  CDK app sets $STRATOSERVE_MODELS_DIR to it). The worker's holds every served model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from stratoserve.declaration.schema import DEFAULT_WORKER, WORKER_FUNCTION

if TYPE_CHECKING:
    from collections.abc import Mapping

    from stratoserve.declaration.schema import Declaration

RUNTIME_LAYER = "runtime"
ONNX_LAYER = "onnx"
MODAL_LAYER = "modal"
MODELS_LAYER_PREFIX = "models-"
MODELS_FOLDER = "stratoserve-models"
"""The models layer's top folder: Lambda unpacks layers into /opt."""
LAMBDA_MODELS_DIR = f"/opt/{MODELS_FOLDER}"

ONNX_PACKAGES = ("onnxruntime", "numpy", "tokenizers")

ARCHITECTURES = {"arm64": "aarch64", "x86_64": "x86_64"}
"""Lambda's architecture names and the manylinux platform's."""
ANY_ARCH = "any"
"""Models layers hold data only: one build serves both architectures."""

NOT_SHIPPED = {
    "boto3": "Lambda's Python runtime ships it",
    "botocore": "Lambda's Python runtime ships it",
    "s3transfer": "Lambda's Python runtime ships it",
}
"""Never in a layer, even when a package requires them."""

ONNX_PRUNED = {
    "huggingface-hub": "tokenizers needs it only for from_pretrained; the runtime reads "
    "tokenizer.json from the models layer",
    "protobuf": "onnxruntime's tools and converters use it; InferenceSession does not",
    "flatbuffers": "onnxruntime's ORT-format tools use it; InferenceSession does not",
    "sympy": "onnxruntime's symbolic shape inference only",
}

ONNXRUNTIME_UNUSED = tuple(
    f"onnxruntime/{package}"
    for package in ("transformers", "quantization", "tools", "datasets", "backend")
)
"""Subpackages functions/runtime/models.py never imports (it uses InferenceSession,
SessionOptions and GraphOptimizationLevel), nor does onnxruntime/__init__.py."""


@dataclass(frozen=True)
class PipLayer:
    name: str
    requirements: tuple[str, ...]
    """Requirement specifiers as pyproject.toml writes them; the builder pins each to the
    version installed here."""
    pruned: Mapping[str, str] = field(default_factory=dict)
    """Dependencies left out on purpose, with the reason (their own dependencies too)."""
    drop_paths: tuple[str, ...] = ()
    """Folders removed after install, relative to python/."""


@dataclass(frozen=True)
class ModelsLayer:
    name: str
    files: tuple[str, ...]
    """Artifact paths relative to models_dir; in the layer under stratoserve-models/."""


Layer = PipLayer | ModelsLayer


def function_architectures(declaration: Declaration) -> dict[str, str]:
    """Each function's Lambda architecture (arm64 or x86_64), the worker included."""
    functions = dict(declaration.functions)
    functions.setdefault(WORKER_FUNCTION, DEFAULT_WORKER)
    return {name: spec.architecture for name, spec in sorted(functions.items())}


def function_packages(declaration: Declaration) -> dict[str, str]:
    """Each function's package type: zip (code + layers) or image."""
    functions = dict(declaration.functions)
    functions.setdefault(WORKER_FUNCTION, DEFAULT_WORKER)
    return {name: spec.package for name, spec in sorted(functions.items())}


def function_layers(declaration: Declaration) -> dict[str, tuple[str, ...]]:
    """The layers each function carries, in attachment order (later layers win in /opt)."""
    assignment: dict[str, tuple[str, ...]] = {}
    for name in function_architectures(declaration):
        models = _function_models(declaration, name)
        layers = [RUNTIME_LAYER]
        if models or name == WORKER_FUNCTION:
            layers.append(ONNX_LAYER)
        if name == WORKER_FUNCTION and declaration.gpu is not None:
            layers.append(MODAL_LAYER)
        if models:
            layers.append(MODELS_LAYER_PREFIX + name)
        assignment[name] = tuple(layers)
    return assignment


def layer_recipes(declaration: Declaration, extras: Mapping[str, list[str]]) -> dict[str, Layer]:
    """Every layer some function carries, by name. `extras` is pyproject.toml's
    [project.optional-dependencies]."""
    runtime = extras.get("runtime")
    if not runtime:
        raise ValueError("pyproject.toml has no `runtime` extra: the layers are made from it")
    recipes: dict[str, Layer] = {
        RUNTIME_LAYER: PipLayer(
            RUNTIME_LAYER,
            tuple(spec for spec in runtime if _name(spec) not in ONNX_PACKAGES),
        ),
        ONNX_LAYER: PipLayer(
            ONNX_LAYER,
            tuple(spec for spec in runtime if _name(spec) in ONNX_PACKAGES),
            pruned=ONNX_PRUNED,
            drop_paths=ONNXRUNTIME_UNUSED,
        ),
    }
    if declaration.gpu is not None:
        modal = [spec for spec in extras.get("gpu", []) if _name(spec) == "modal"]
        if not modal:
            raise ValueError("pyproject.toml's `gpu` extra does not pin modal")
        recipes[MODAL_LAYER] = PipLayer(MODAL_LAYER, tuple(modal))
    for name in function_architectures(declaration):
        models = _function_models(declaration, name)
        if models:
            recipes[MODELS_LAYER_PREFIX + name] = ModelsLayer(
                MODELS_LAYER_PREFIX + name, served_files(declaration, models)
            )
    return recipes


def served_files(declaration: Declaration, models: list[str]) -> tuple[str, ...]:
    """Artifact and tokenizer paths of every version of `models` some API version serves."""
    files: set[str] = set()
    for model in models:
        for version in declaration.served_versions(model):
            spec = declaration.models[model].versions[version]
            files.add(spec.artifact)
            if spec.tokenizer:
                files.add(spec.tokenizer)
    return tuple(sorted(files))


def _function_models(declaration: Declaration, name: str) -> list[str]:
    if name == WORKER_FUNCTION:
        return sorted({model for api in declaration.api.values() for model in api.models})
    return list(declaration.functions[name].models)


def _name(spec: str) -> str:
    """The project name a requirement specifier names, normalised (PEP 503)."""
    head = spec.split(";")[0].strip()
    for stop in "[<>=!~ ":
        head = head.split(stop)[0]
    return head.lower().replace("_", "-").replace(".", "-")
