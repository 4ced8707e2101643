"""The Modal app as code: it imports offline (no token, no built models) with every
setting from the declaration, and its class runs locally through Modal's .local() on the
real models, giving the CPU path's vectors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from functions.runtime.models import ModelKey, load_model
from gpu_jobs import engine
from stratoserve.declaration import function_environment as variables
from tests.conftest import DECLARATION_FILE, ROOT

if TYPE_CHECKING:
    from pathlib import Path
    from types import ModuleType

    from stratoserve.declaration import Declaration

TEXTS = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The weather in Lisbon is mild in winter, and the summers are long and dry.",
    "Hello there!",
    "Please cancel my subscription and refund the last payment as soon as you can.",
    "GPUs run the biggest jobs.",
]

INSPECT = """
import json
import gpu_jobs.app as gpu_app
service = gpu_app.Model._get_class_service_function()
print(json.dumps({
    "app": gpu_app.app.name,
    "gpu": service._spec_.gpus,
    "run_job_gpu": gpu_app.run_job._spec_.gpus,
    "options": gpu_app.MODEL_OPTIONS,
    "batching": gpu_app.BATCHING,
    "served": gpu_app.SERVED,
}))
"""


@pytest.fixture(scope="module")
def gpu_app(built_models: Path) -> ModuleType:
    import gpu_jobs.app

    return gpu_jobs.app


def _cosines(first: Any, second: Any) -> np.ndarray:
    a, b = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_it_imports_offline_on_a_fresh_clone_with_the_declarations_settings(
    declaration: Declaration, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    environment = {
        name: value for name, value in os.environ.items() if not name.startswith("MODAL_")
    }
    # No ~/.modal.toml, no token, and no built models (as on a fresh clone).
    environment |= {"HOME": str(home), variables.MODELS_DIR: str(tmp_path / "no-models")}
    environment.pop(variables.CONFIG, None)

    done = subprocess.run(
        [sys.executable, "-c", INSPECT],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.splitlines()[-1])
    gpu = declaration.gpu
    assert gpu is not None
    assert found["app"] == gpu.app
    assert found["gpu"] == gpu.gpu
    assert found["run_job_gpu"] is None  # the job's fan-out runs on a cheap CPU container
    assert found["options"] == {
        "gpu": gpu.gpu,
        "min_containers": gpu.min_containers,
        "scaledown_window": gpu.scaledown_window_s,
        "enable_memory_snapshot": gpu.memory_snapshot,
        "timeout": gpu.timeout_s,
        "retries": gpu.retries,
    }
    assert found["batching"] == {"max_batch_size": gpu.max_batch_size, "wait_ms": gpu.wait_ms}
    assert found["served"] == {"embed": ["1", "2"]}


def test_the_smoke_entrypoint_runs_every_served_version_locally(gpu_app: ModuleType) -> None:
    summary = gpu_app.run_smoke()  # what `modal run gpu_jobs/app.py` prints

    assert type(gpu_app.smoke).__name__ == "LocalEntrypoint"
    assert summary.startswith("smoke: ")
    assert "embed:1 ok (4 outputs, CPUExecutionProvider)" in summary
    assert "embed:2 ok (4 outputs, CPUExecutionProvider)" in summary


@pytest.mark.parametrize("version", ["1", "2"])
def test_the_gpu_class_gives_the_cpu_paths_vectors(
    gpu_app: ModuleType, declaration: Declaration, built_models: Path, version: str
) -> None:
    cpu = load_model(
        ModelKey("embed", version), declaration.models["embed"], built_models, declaration.runtime
    )
    expected = [cpu.runner.run(cpu.runner.check([text]))[0] for text in TEXTS]

    alone = engine.GpuModel(
        declaration, DECLARATION_FILE, "embed", version, providers=["CPUExecutionProvider"]
    )
    alone.load()
    model = gpu_app.model_instance("embed", version)
    # Through the Modal class (its enter hooks, its batched method), two texts a batch.
    job = engine.run_job({"inputs": TEXTS}, model.predict.local, 2)

    assert alone.provider == "CPUExecutionProvider"
    assert _cosines(alone.predict(TEXTS), expected).min() >= 0.9999
    assert _cosines(job["outputs"], expected).min() >= 0.9999
    assert all(isinstance(value, float) for value in job["outputs"][0])  # JSON-ready


def test_a_model_the_gpu_does_not_serve_is_refused(declaration: Declaration) -> None:
    with pytest.raises(engine.NotServedError, match="digits"):
        engine.GpuModel(declaration, DECLARATION_FILE, "digits", "1")
