"""GPU jobs end to end on the local stack, as clients (stratoserve.client) see them: a job
over the GPU threshold from a plan with GPU jobs runs on the local GPU executor (the
gpu_jobs class's code, on the CPU here) and returns the inline vectors; the same job from a
plan without them runs on the CPU worker; and the GPU layer failing (errors, hangs, a
killed executor) ends every job succeeded on the CPU worker with the reason, or failed
with it."""

from __future__ import annotations

import os
import signal
import time
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pytest

from stratoserve.client import Client, JobState
from tests.conftest import DECLARATION_FILE, ROOT
from tests.integration.stratoserve.local.dev_stack import (
    KEY,
    Stack,
    create_key,
    start_stack,
    stop_stack,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

GPU_MIN_INPUTS = 40
DEADLINE_S = 10
"""The test declaration's gpu.deadline_s (its least: gpu.timeout_s's least)."""
TEXTS = [
    f"{subject} {verb} the {thing} near the river, number {index}"
    for index, (subject, verb, thing) in enumerate(
        (s, v, t)
        for s in ("a child", "the old man", "my neighbour's dog")
        for v in ("watches", "paints", "forgets", "carries")
        for t in ("boat", "small red kite", "bread", "long winding road")
    )
][:GPU_MIN_INPUTS]


def _test_declaration(state: Path) -> Path:
    """stratoserve.toml with a low GPU threshold, follow-ups every second, a short
    deadline, quick retries, a plan with embed but no GPU jobs, and `strict`: embed v1
    again under another name, whose GPU jobs must not fall back."""
    models = state / "models"
    (models / "strict").mkdir(parents=True)
    for name in ("digits", "embed"):
        (models / name).symlink_to(ROOT / "build" / "models" / name)
    (models / "strict" / "1").symlink_to(ROOT / "build" / "models" / "embed" / "1")
    text = DECLARATION_FILE.read_text()
    changes = {
        'models_dir = "build/models"': f'models_dir = "{models}"',
        "retry_delay_s = 2 ": "retry_delay_s = 0.2 ",
        "gpu_min_inputs = 500 ": f"gpu_min_inputs = {GPU_MIN_INPUTS} ",
        'models = ["embed"]            # what the GPU app serves': (
            'models = ["embed", "strict"]  # what the GPU app serves'
        ),
        "timeout_s = 600 ": "timeout_s = 10 ",
        "retries = 2 ": "retries = 0 ",
        "deadline_s = 1800 ": f"deadline_s = {DEADLINE_S} ",
        "poll_interval_s = 10 ": "poll_interval_s = 1 ",
        '[functions.embed]\nmodels = ["embed"]': '[functions.embed]\nmodels = ["embed", "strict"]',
        '[api.v1]\nmodels = { digits = "1", embed = "1" }': (
            '[api.v1]\nmodels = { digits = "1", embed = "1", strict = "1" }'
        ),
    }
    for old, new in changes.items():
        assert old in text, f"stratoserve.toml changed: update this test's {old!r}"
        text = text.replace(old, new)
    text += f"""
[models.strict]
task = "embed"
[models.strict.versions.1]
artifact = "strict/1/model.onnx"
tokenizer = "strict/1/tokenizer.json"

[routing.strict]
inline_max_inputs = 64
gpu_min_inputs = {GPU_MIN_INPUTS}
gpu_fallback = false

[plans.starter]
rate = 100
burst = 100
models = ["embed"]
"""
    path = state / "stratoserve.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def stack(built_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state = tmp_path_factory.mktemp("gpu-state")
    running = start_stack(state, _test_declaration(state))
    yield running
    stop_stack(running)


@pytest.fixture(scope="module")
def executor(stack: Stack) -> dict[str, Any]:
    record: dict[str, Any] = stack.record()["gpu_executor"]
    return {**record, "headers": stack.bearer()}


def _faults(executor: dict[str, Any], **faults: float) -> None:
    response = httpx.put(
        f"{executor['url']}/faults", json=faults, headers=executor["headers"], timeout=10
    )
    assert response.status_code == 200, response.text


def _client(stack: Stack, key: str = KEY) -> Client:
    return Client(stack.url, key, api_version="v1", timeout_s=60)


def _submit(stack: Stack, model: str, inputs: list[str], key: str = KEY) -> str:
    with _client(stack, key) as client:
        return client.submit(model, inputs).job_id


def _wait(
    stack: Stack, job_ids: list[str], key: str = KEY, timeout_s: float = 90
) -> list[JobState]:
    """The jobs' final states, polled together (Job.wait follows one)."""
    deadline = time.monotonic() + timeout_s
    states: dict[str, JobState] = {}
    with _client(stack, key) as client:
        while len(states) < len(job_ids):
            for job_id in set(job_ids) - set(states):
                if (state := client.job(job_id).state).finished:
                    states[job_id] = state
            assert time.monotonic() < deadline, f"unfinished: {set(job_ids) - set(states)}"
            time.sleep(0.3)
    return [states[job_id] for job_id in job_ids]


def _inline(stack: Stack, texts: list[str]) -> np.ndarray:
    with _client(stack) as client:
        return np.asarray(client.predict("embed", texts).outputs)


def _cosines(stack: Stack, state: JobState, expected: np.ndarray, key: str = KEY) -> np.ndarray:
    # The client reads a large result from its presigned URL in S3 the same way.
    with _client(stack, key) as client:
        outputs = np.asarray(client.job(state.job_id).wait(timeout_s=0, progress=False).outputs)
    assert outputs.shape == expected.shape
    cosines: np.ndarray = np.sum(outputs * expected, axis=1) / (
        np.linalg.norm(outputs, axis=1) * np.linalg.norm(expected, axis=1)
    )
    return cosines


def test_a_pro_job_over_the_threshold_runs_on_the_gpu_executor(
    stack: Stack, executor: dict[str, Any]
) -> None:
    health = httpx.get(f"{executor['url']}/health", headers=executor["headers"], timeout=10).json()

    (job,) = _wait(stack, [_submit(stack, "embed", TEXTS)])
    (smaller,) = _wait(stack, [_submit(stack, "embed", TEXTS[:-1])])

    assert health["provider"] == "CPUExecutionProvider"
    assert (job.status, job.backend, job.fallback) == ("succeeded", "modal", None)
    assert _cosines(stack, job, _inline(stack, TEXTS)).min() >= 0.999
    assert (smaller.status, smaller.backend) == ("succeeded", "lambda")


def test_the_same_job_from_a_plan_without_gpu_jobs_runs_on_the_cpu_worker(stack: Stack) -> None:
    key = create_key(stack, "smallco", "starter")["key"]

    (job,) = _wait(stack, [_submit(stack, "embed", TEXTS, key=key)], key=key)

    assert (job.status, job.backend, job.fallback) == ("succeeded", "lambda", None)
    assert _cosines(stack, job, _inline(stack, TEXTS), key=key).min() >= 0.9999


def test_failing_and_hanging_calls_fall_back_or_fail_with_the_reason(
    stack: Stack, executor: dict[str, Any]
) -> None:
    outcomes = {}
    for fault in ("error", "hang"):
        _faults(executor, **{fault: 1.0})
        texts = [*TEXTS[:-1], f"a {fault} in the GPU layer"]
        submitted = [_submit(stack, model, texts) for model in ("embed", "strict")]
        outcomes[fault] = (texts, _wait(stack, submitted, timeout_s=DEADLINE_S + 60))
    _faults(executor, error=0.0, hang=0.0)

    for fault, (texts, (fell_back, failed)) in outcomes.items():
        assert (fell_back.status, fell_back.backend) == ("succeeded", "lambda"), fault
        assert _cosines(stack, fell_back, _inline(stack, texts)).min() >= 0.9999
        assert failed.status == "failed", fault
        assert (failed.error or "").endswith("(routing.strict.gpu_fallback is off)")
    _, (error_fallback, error_failure) = outcomes["error"]
    assert (error_fallback.fallback or "").startswith("the GPU call failed: InjectedFault")
    assert (error_failure.error or "").startswith("the GPU call failed: InjectedFault")
    assert outcomes["hang"][1][0].fallback == (
        f"the GPU call did not finish within gpu.deadline_s ({DEADLINE_S} s); cancelled"
    )


def test_a_dead_executor_means_fallback_or_a_failure_naming_it(
    stack: Stack, executor: dict[str, Any]
) -> None:
    os.kill(executor["pid"], signal.SIGKILL)

    fell_back, failed = _wait(
        stack,
        [_submit(stack, model, TEXTS) for model in ("embed", "strict")],
        timeout_s=DEADLINE_S + 60,
    )

    assert (fell_back.status, fell_back.backend) == ("succeeded", "lambda")
    assert "local GPU executor unreachable" in (fell_back.fallback or "")
    assert failed.status == "failed"
    assert (failed.error or "").startswith(f"not done within gpu.deadline_s ({DEADLINE_S} s): ")
    assert "local GPU executor unreachable" in (failed.error or "")
