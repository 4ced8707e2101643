"""The GPU layer: a Modal app that runs the biggest jobs.

Every setting comes from stratoserve.toml's [gpu] table, read through the one loader.
The worker spawns `run_job` (a cheap CPU container) with a job's request; it fans the
inputs out, length-sorted, to the `Model` class, whose GPU containers batch them
(`modal.batched`) and run them through the same model code as the CPU path.

    modal deploy gpu_jobs/app.py        # deploys the app under gpu.app
    modal run gpu_jobs/app.py           # the smoke test: Model.predict.local(...) here

Importing this module touches no network and needs no Modal token, nor built models (a
fresh clone imports it); `stratoserve dev` runs `Model` through `.local()` in its local
GPU executor.
"""

# No `from __future__ import annotations` here: Modal reads the class parameters'
# annotations (`model: str = modal.parameter()`) as real types.
import os
from pathlib import Path
from typing import Any

import modal

from gpu_jobs import engine
from stratoserve.declaration import function_environment as variables
from stratoserve.declaration import load_declaration, models_dir
from stratoserve.declaration.loader import DEFAULT_FILE

SOURCE = Path(
    os.environ.get(variables.CONFIG) or Path(__file__).resolve().parents[1] / DEFAULT_FILE
)
DECLARATION = load_declaration(SOURCE)
if DECLARATION.gpu is None:
    raise RuntimeError(f"{SOURCE}: no [gpu] table, so there is no GPU layer to deploy")
GPU = DECLARATION.gpu
SERVED = engine.served(DECLARATION)

# Where the container finds the declaration and the artifacts.
REMOTE_CONFIG = "/root/stratoserve.toml"
REMOTE_MODELS = "/models"
ENVIRONMENT = {variables.CONFIG: REMOTE_CONFIG, variables.MODELS_DIR: REMOTE_MODELS}

# The Python the containers import: this package, the model code, the declaration loader.
SOURCES = ("gpu_jobs", "functions.runtime", "stratoserve.declaration")

# Pinned as in .venv (pydantic, numpy, tokenizers, orjson) so the GPU computes what the CPU
# path does. onnxruntime-gpu 1.31 targets CUDA 13; its [cuda,cudnn] extras bring the CUDA
# and cuDNN libraries as wheels (onnxruntime.preload_dlls loads them), pinned here to the
# CUDA 13.0 line, which needs an NVIDIA driver of 580 or later.
DECLARATION_PACKAGES = ("pydantic==2.14.4",)
GPU_PACKAGES = (
    *DECLARATION_PACKAGES,
    "onnxruntime-gpu[cuda,cudnn]==1.31.1",
    "nvidia-cuda-runtime==13.0.96",
    "nvidia-cuda-nvrtc==13.0.88",
    "nvidia-nvjitlink==13.0.88",
    "nvidia-cublas==13.0.2.14",
    "nvidia-cufft==12.0.0.61",
    "nvidia-curand==10.4.0.35",
    "nvidia-cudnn-cu13==9.13.1.26",
    "numpy==2.4.6",
    "tokenizers==0.23.3",
    "orjson==3.13.0",
)


def _with_artifacts(image: modal.Image) -> modal.Image:
    """The served versions' artifacts (and nothing else from the models dir). Files are
    read when the app deploys, not at import: a fresh clone without build/ imports fine."""
    local = models_dir(DECLARATION, SOURCE)
    for model, versions in SERVED.items():
        for version in versions:
            spec = DECLARATION.models[model].versions[version]
            for relative in (spec.artifact, spec.tokenizer):
                if relative is not None:
                    image = image.add_local_file(local / relative, f"{REMOTE_MODELS}/{relative}")
    return image


def _with_sources(image: modal.Image) -> modal.Image:
    return image.add_local_file(SOURCE, REMOTE_CONFIG).add_local_python_source(*SOURCES)


app = modal.App(GPU.app)

gpu_image = _with_sources(
    _with_artifacts(
        modal.Image.debian_slim(python_version="3.12").pip_install(*GPU_PACKAGES).env(ENVIRONMENT)
    )
)
"""What the GPU containers run: ONNX Runtime with CUDA, the served models."""

job_image = _with_sources(
    modal.Image.debian_slim(python_version="3.12")
    .pip_install(*DECLARATION_PACKAGES)
    .env(ENVIRONMENT)
)
"""What run_job's CPU container needs: the declaration, no models, no CUDA."""

MODEL_OPTIONS: dict[str, Any] = {
    "gpu": GPU.gpu,
    "min_containers": GPU.min_containers,
    "scaledown_window": GPU.scaledown_window_s,
    "enable_memory_snapshot": GPU.memory_snapshot,
    "timeout": GPU.timeout_s,
    "retries": GPU.retries,
}
BATCHING: dict[str, int] = {"max_batch_size": GPU.max_batch_size, "wait_ms": GPU.wait_ms}

BATCHES_IN_FLIGHT = 4
"""Batches run_job keeps in flight: enough to keep a container's next batch waiting (and
to let Modal add containers for a big job), few enough that batches stay length-sorted."""


@app.cls(image=gpu_image, **MODEL_OPTIONS)
class Model:
    """One model version on a GPU; Modal keeps an instance per (model, version)."""

    model: str = modal.parameter()
    version: str = modal.parameter()

    # Pre-snapshot when snapshots are on (Modal allows snap=True only then): no GPU yet.
    @modal.enter(snap=GPU.memory_snapshot)
    def prepare(self) -> None:
        self.engine = engine.GpuModel(DECLARATION, SOURCE, self.model, self.version)
        self.engine.prepare()

    @modal.enter(snap=False)
    def load(self) -> None:
        self.engine.load()
        if not modal.is_local() and self.engine.provider != engine.CUDA:
            # A GPU container on the CPU would be slow, and silently so: fail its start.
            raise RuntimeError(
                f"model {self.engine.key}: the session runs on {self.engine.provider}, not "
                f"{engine.CUDA} (is the {GPU.gpu} GPU visible, and CUDA 13 installed?)"
            )

    # Modal allows no other method on a class with a batched one.
    @modal.batched(**BATCHING)
    def predict(self, items: list[Any]) -> list[Any]:
        return self.engine.predict(items)


def model_instance(model: str, version: str) -> Any:
    """`Model(model=..., version=...)`: Modal builds that constructor from the parameters,
    which type checkers cannot see."""
    return Model(model=model, version=version)  # type: ignore[call-arg]


@app.function(image=job_image, timeout=GPU.timeout_s, retries=GPU.retries, cpu=1.0)
def run_job(request: dict[str, Any]) -> dict[str, Any]:
    """A job {"model", "version", "inputs"} → {"outputs": [...]} in the inputs' order."""
    engine.logger.info(
        "job %s: %d inputs of %s:%s",
        request.get("correlation_id", "-"),
        len(request["inputs"]),
        request["model"],
        request["version"],
    )
    engine.check_served(DECLARATION, request["model"], request["version"])
    engine.check_inputs(DECLARATION, request["model"], request["inputs"])
    model = model_instance(request["model"], request["version"])
    return engine.run_job(
        request,
        lambda batch: list(model.predict.map(batch)),
        GPU.max_batch_size,
        concurrency=BATCHES_IN_FLIGHT,
    )


def run_smoke() -> str:
    """Every served version through `Model.predict.local` (the @modal.enter hooks run here,
    on this machine's providers): raises on a wrong output, answers a one-line summary."""
    results = []
    for model, versions in SERVED.items():
        for version in versions:
            instance = model_instance(model, version)
            instance.predict.local([])  # runs the enter hooks: loads the model
            loaded: engine.GpuModel = instance.engine
            inputs = engine.smoke_inputs(loaded)
            outputs = instance.predict.local(inputs)
            engine.check_smoke(loaded, inputs, outputs)
            results.append(f"{loaded.key} ok ({len(outputs)} outputs, {loaded.provider})")
    return "smoke: " + "; ".join(results)


@app.local_entrypoint()
def smoke() -> None:
    print(run_smoke())  # noqa: T201  # the entrypoint's one line of output
