"""The [gpu] table and routing.<model>'s GPU thresholds: the file's own values kept, one
line per problem naming the key, and the route each job size and plan takes."""

from __future__ import annotations

import textwrap
import tomllib
from typing import TYPE_CHECKING

import pytest

from functions.runtime.routing import GpuJobsNotInPlan, JobTooLarge, route_job
from stratoserve.declaration import DeclarationError, load_declaration
from tests.conftest import DECLARATION_FILE
from tests.unit.stratoserve.declaration.minimal import MINIMAL

if TYPE_CHECKING:
    from pathlib import Path

    from stratoserve.declaration import Declaration

EMBED = """
[models.embed]
task = "embed"
[models.embed.versions.1]
artifact = "embed/1/model.onnx"
tokenizer = "embed/1/tokenizer.json"
[api.v2]
models = { embed = "1" }
[gpu]
models = ["embed"]
[routing.embed]
inline_max_inputs = 8
job_max_inputs = 100
gpu_min_inputs = 50
gpu_min_bytes = 4096
gpu_max_inputs = 1000
[plans.free]
rate = 1
burst = 1
[plans.pro]
rate = 1
burst = 1
gpu_jobs = true
"""


def _load(tmp_path: Path, extra: str, *, replace: dict[str, str] | None = None) -> Declaration:
    text = textwrap.dedent(MINIMAL) + textwrap.dedent(extra)
    for old, new in (replace or {}).items():
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "stratoserve.toml"
    path.write_text(text)
    return load_declaration(path)


def _problems(tmp_path: Path, extra: str, **options: dict[str, str]) -> list[str]:
    with pytest.raises(DeclarationError) as caught:
        _load(tmp_path, extra, **options)
    return caught.value.problems


def test_the_shipped_gpu_table_is_read_as_written() -> None:
    declaration = load_declaration(DECLARATION_FILE)
    written = tomllib.loads(DECLARATION_FILE.read_text())

    assert declaration.gpu is not None
    assert declaration.gpu.model_dump() == {
        **declaration.gpu.model_dump(),
        **written["gpu"],
    }
    assert declaration.runs_on_gpu("embed")
    assert not declaration.runs_on_gpu("digits")
    assert (
        declaration.routing_for("embed").gpu_min_inputs
        == (written["routing"]["embed"]["gpu_min_inputs"])
    )


def test_without_a_gpu_table_nothing_runs_on_the_gpu(tmp_path: Path) -> None:
    declaration = _load(tmp_path, "")

    assert declaration.gpu is None
    assert not declaration.runs_on_gpu("digits")


def test_gpu_problems_are_one_line_each_naming_the_key(tmp_path: Path) -> None:
    def problems_with(gpu_lines: str) -> list[str]:
        return _problems(
            tmp_path,
            EMBED + "[routing.digits]\ngpu_min_inputs = 10\n",
            replace={
                'models = ["embed"]': f'models = ["embed", "embedd"]\n{gpu_lines}',
                "gpu_min_inputs = 50": "gpu_min_inputs = 500",
            },
        )

    # Values out of shape stop the loader before it relates one part to another.
    assert problems_with('gpu = "RTX4090"\nwait_ms = -1') == [
        "gpu.gpu: must be one of Modal's GPU types (T4, L4, A10G, A100, A100-40GB, A100-80GB, "
        'L40S, H100, H200, B200), optionally with a count such as "H100:2"',
        "gpu.wait_ms: must be at least 0",
    ]

    problems = problems_with("deadline_s = 60")

    assert problems == [
        "gpu.models: unknown model embedd (did you mean embed?)",
        "routing.embed.gpu_min_inputs: must be at most job_max_inputs + 1 (101), or jobs of "
        "the sizes between have nowhere to run",
        "routing.digits.gpu_min_inputs: digits is not in gpu.models (declare a [gpu] table "
        "that serves it, or leave the GPU thresholds out)",
        "gpu.deadline_s: must be at least gpu.timeout_s x (gpu.retries + 1) (2700), or a call "
        "that Modal still allows is given up",
    ]


def _route(declaration: Declaration, plan: str | None, inputs: int, payload: int = 10) -> str:
    spec = declaration.plans[plan] if plan else None
    return route_job(
        declaration, "embed", plan=spec, plan_name=plan, inputs=inputs, payload_bytes=payload
    ).backend


def test_jobs_route_by_size_and_plan(tmp_path: Path) -> None:
    declaration = _load(tmp_path, EMBED)

    assert _route(declaration, "pro", 49) == "lambda"
    assert _route(declaration, "pro", 50) == "modal"
    assert _route(declaration, "pro", 3, payload=4096) == "modal"  # long texts: by bytes
    assert _route(declaration, None, 50) == "modal"  # no plan limits the caller
    assert _route(declaration, "free", 50) == "lambda"  # without_gpu = "cpu"
    assert _route(declaration, "pro", 1000) == "modal"
    with pytest.raises(JobTooLarge) as over_gpu:
        _route(declaration, "pro", 1001)
    with pytest.raises(JobTooLarge) as over_cpu:
        _route(declaration, "free", 101)

    assert str(over_gpu.value) == (
        "1001 inputs is more than a GPU job of embed may carry (1000, "
        "routing.embed.gpu_max_inputs); split it into several jobs"
    )
    assert str(over_cpu.value) == (
        "101 inputs is more than a job of embed may carry (100, routing.embed.job_max_inputs); "
        "plans with GPU jobs may send up to 1000; split it into several jobs"
    )


def test_a_plan_without_gpu_jobs_is_refused_where_the_declaration_says_so(
    tmp_path: Path,
) -> None:
    declaration = _load(
        tmp_path,
        EMBED,
        replace={"gpu_max_inputs = 1000": 'gpu_max_inputs = 1000\nwithout_gpu = "refuse"'},
    )

    assert _route(declaration, "free", 49) == "lambda"
    with pytest.raises(GpuJobsNotInPlan) as refused:
        _route(declaration, "free", 50)

    assert str(refused.value) == (
        "plan free does not include GPU jobs, and a job of embed this big (50 inputs or more "
        "or 4096 bytes of inputs or more) runs on the GPU; send smaller jobs"
    )
