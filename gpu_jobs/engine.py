"""What a GPU container does with a job, in plain Python: no Modal here.

The Modal app (gpu_jobs/app.py), the local GPU executor (stratoserve/local/gpu_executor.py)
and the device checks all run jobs through this module, and every model goes through
functions.runtime.models.load_model: the GPU gives the same vectors as the CPU path for
the same model version, only the execution provider differs.

onnxruntime is imported when a model is prepared or loaded, never when this module is.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from functions.runtime.models import INPUT_CHECKS, ModelKey, ModelUnavailableError, load_model
from stratoserve.declaration import models_dir

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from functions.runtime.models import LoadedModel
    from stratoserve.declaration import Declaration

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

logger = logging.getLogger("stratoserve.gpu")


class NotServedError(LookupError):
    """A model or version the GPU layer does not serve."""


class SmokeError(RuntimeError):
    """The smoke test found outputs a model must never give."""


def providers() -> list[str]:
    """ONNX Runtime's providers, best first: CUDA when this onnxruntime build has it.

    onnxruntime-gpu lists CUDA whenever it was built with it; whether the GPU really takes
    the session shows only when one is created (it falls back to the CPU with a warning),
    so GpuModel records the provider the session ended up with.
    """
    import onnxruntime

    if CUDA not in onnxruntime.get_available_providers():
        return [CPU]
    preload = getattr(onnxruntime, "preload_dlls", None)
    if preload is not None:
        # Loads CUDA and cuDNN from the nvidia-* wheels (onnxruntime-gpu[cuda,cudnn]), so
        # no system CUDA is needed; a failure here surfaces as a CPU session below.
        try:
            preload()
        except Exception as error:
            logger.warning("onnxruntime.preload_dlls failed: %s", error)
    return [CUDA, CPU]


def served(declaration: Declaration) -> dict[str, list[str]]:
    """The versions the GPU layer serves, by model: of each model in gpu.models, every
    version an API version serves."""
    if declaration.gpu is None:
        return {}
    return {model: declaration.served_versions(model) for model in declaration.gpu.models}


def check_served(declaration: Declaration, model: str, version: str) -> None:
    versions = served(declaration)
    if model not in versions:
        raise NotServedError(
            f"model {model} is not served by the GPU layer (gpu.models: "
            f"{', '.join(versions) or 'none'})"
        )
    if version not in versions[model]:
        raise NotServedError(
            f"model {model} version {version} is not served by the GPU layer (served: "
            f"{', '.join(versions[model]) or 'none'})"
        )


def check_inputs(declaration: Declaration, model: str, inputs: list[Any]) -> None:
    """The task's input checks over the whole job, before it is cut into batches (an
    InputError then names the input's index in the job, not in its batch)."""
    INPUT_CHECKS[declaration.models[model].task](inputs)


class GpuModel:
    """One model version as a GPU container holds it."""

    def __init__(
        self,
        declaration: Declaration,
        source: Path,
        model: str,
        version: str,
        *,
        providers: list[str] | None = None,
    ) -> None:
        check_served(declaration, model, version)
        self.key = ModelKey(model, version)
        self.spec = declaration.models[model]
        self.models_dir = models_dir(declaration, source)
        self.runtime = declaration.runtime
        self._providers = providers
        self.provider: str | None = None
        """The provider the session really uses, once loaded."""
        self._loaded: LoadedModel | None = None

    @property
    def task(self) -> str:
        return self.spec.task

    def prepare(self) -> None:
        """What can be done without a GPU (before a memory snapshot): the imports, and a
        clear error now if the artifacts are not there."""
        import numpy  # noqa: F401
        import onnxruntime  # noqa: F401

        version = self.spec.versions[self.key.version]
        if self.spec.task == "embed":
            import tokenizers  # noqa: F401
        for relative in (version.artifact, version.tokenizer):
            if relative is not None and not (self.models_dir / relative).is_file():
                raise ModelUnavailableError(
                    f"model {self.key}: {self.models_dir / relative} not found; build it with "
                    f"`stratoserve models build {self.key.name}`"
                )

    def load(self) -> None:
        chosen = self._providers if self._providers is not None else providers()
        self._loaded = load_model(
            self.key, self.spec, self.models_dir, self.runtime, providers=chosen
        )
        self.provider = self._loaded.providers[0]
        logger.info("loaded %s on %s in %.0f ms", self.key, self.provider, self._loaded.load_ms)

    @property
    def loaded(self) -> LoadedModel:
        """The loaded model (its runner and session), for measurements."""
        if self._loaded is None:
            raise RuntimeError(f"model {self.key}: not loaded yet (call load())")
        return self._loaded

    @property
    def features(self) -> int | None:
        """A classifier's input width (None for other tasks or when the graph leaves it open)."""
        runner = self._runner()
        features = getattr(runner, "features", None)
        return features if isinstance(features, int) else None

    def predict(self, items: list[Any]) -> list[Any]:
        """One JSON-ready output per item (float lists for embeddings, dicts for classes)."""
        if not items:
            return []
        runner = self._runner()
        outputs = json_ready(runner.run(runner.check(items)))
        if len(outputs) != len(items):
            raise RuntimeError(f"model {self.key}: {len(outputs)} outputs for {len(items)} inputs")
        return list(outputs)

    def _runner(self) -> Any:
        return self.loaded.runner


def json_ready(value: Any) -> Any:
    """numpy arrays and scalars as plain lists and numbers (what Modal pickles cheaply and
    what any JSON encoder writes)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(item) for item in value]
    return value


def _length(item: Any) -> int:
    return len(item) if isinstance(item, str | list) else 0


def batches(inputs: list[Any], max_batch_size: int) -> list[list[int]]:
    """Indexes of `inputs` in chunks of at most `max_batch_size`, shortest inputs first, so
    the texts of one batch are of about one length and pad little."""
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
    order = sorted(range(len(inputs)), key=lambda index: _length(inputs[index]))
    return [order[start : start + max_batch_size] for start in range(0, len(order), max_batch_size)]


def run_job(
    request: dict[str, Any],
    predict: Callable[[list[Any]], list[Any]],
    max_batch_size: int,
    *,
    concurrency: int = 1,
) -> dict[str, Any]:
    """Run a job {"model", "version", "inputs"} a length-sorted batch at a time through
    `predict`; answers {"outputs": [...]} in the inputs' order. With `concurrency` above 1
    that many batches are in flight at once (Modal spreads them over its containers)."""
    inputs = request["inputs"]
    if not isinstance(inputs, list):
        raise TypeError(f"inputs must be a list, got {type(inputs).__name__}")
    chunks = batches(inputs, max_batch_size)

    def run(chunk: list[int]) -> list[Any]:
        results = list(predict([inputs[index] for index in chunk]))
        if len(results) != len(chunk):
            raise RuntimeError(f"{len(results)} outputs for a batch of {len(chunk)} inputs")
        return results

    if concurrency > 1 and len(chunks) > 1:
        with ThreadPoolExecutor(min(concurrency, len(chunks))) as pool:
            results = list(pool.map(run, chunks))
    else:
        results = [run(chunk) for chunk in chunks]
    outputs: list[Any] = [None] * len(inputs)
    for chunk, chunk_results in zip(chunks, results, strict=True):
        for index, output in zip(chunk, chunk_results, strict=True):
            outputs[index] = output
    return {"outputs": outputs}


SMOKE_TEXTS = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome, the best film I have seen this year.",
    "stratoserve sends the biggest jobs to a GPU.",
]
"""The first two mean nearly the same, the third something else: a model that computes
garbage (a provider gone wrong) cannot rank them right."""


def smoke_inputs(model: GpuModel) -> list[Any]:
    """A few inputs any loaded model of its task accepts."""
    if model.task == "embed":
        return list(SMOKE_TEXTS)
    features = model.features or 64
    return [
        [float((row * features + column) % 17) for column in range(features)] for row in range(3)
    ]


def check_smoke(model: GpuModel, inputs: list[Any], outputs: list[Any]) -> None:
    """Raises SmokeError unless the outputs are what the task promises: one per input, and
    unit-length vectors that rank meaning right, or probabilities that sum to 1."""
    import math

    if len(outputs) != len(inputs):
        raise SmokeError(f"{model.key}: {len(outputs)} outputs for {len(inputs)} inputs")
    if model.task == "embed":
        widths = {len(vector) for vector in outputs}
        if len(widths) != 1 or not widths.pop():
            raise SmokeError(f"{model.key}: vectors of different or zero widths")
        for index, vector in enumerate(outputs):
            norm = math.sqrt(sum(value * value for value in vector))
            if not math.isclose(norm, 1.0, abs_tol=1e-3):
                raise SmokeError(f"{model.key}: output {index} has norm {norm:.4f}, not 1")

        def cosine(first: int, second: int) -> float:
            return float(sum(a * b for a, b in zip(outputs[first], outputs[second], strict=True)))

        if len(outputs) >= 3 and not cosine(0, 1) > cosine(0, 2):
            raise SmokeError(
                f"{model.key}: similar texts score {cosine(0, 1):.3f}, unrelated ones "
                f"{cosine(0, 2):.3f}: the vectors are wrong"
            )
        return
    for index, output in enumerate(outputs):
        probabilities = output.get("probabilities") if isinstance(output, dict) else None
        values = list(
            probabilities.values() if isinstance(probabilities, dict) else probabilities or []
        )
        if not values or not math.isclose(sum(values), 1.0, abs_tol=1e-3):
            raise SmokeError(f"{model.key}: output {index} has no probabilities that sum to 1")
