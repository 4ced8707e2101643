"""The local GPU executor as the worker meets it: a process on a loopback port that runs
the gpu_jobs class on real models, with the protocol's answers and injected faults."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pytest

from functions.runtime.models import ModelKey, load_model
from stratoserve.local.gpu_calls import ExecutorError
from stratoserve.local.gpu_executor import FAULTS_ENV, ExecutorProcess, launch
from tests.conftest import DECLARATION_FILE, ROOT

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from stratoserve.declaration import Declaration

TEXTS = [
    "A man is eating food.",
    "A man is eating a piece of bread, slowly, at the kitchen table.",
    "Hi.",
    "The weather in Lisbon is mild in winter.",
    "Please cancel my subscription.",
]


@pytest.fixture(scope="module")
def executor(built_models: Path) -> Iterator[ExecutorProcess]:
    process = launch(DECLARATION_FILE, cwd=ROOT)
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


@pytest.fixture
def client(executor: ExecutorProcess) -> Iterator[httpx.Client]:
    bearer = {"Authorization": f"Bearer {executor.token}"}
    with httpx.Client(base_url=executor.url, headers=bearer, timeout=30) as http:
        yield http
        http.put("/faults", json={"error": 0, "hang": 0})


def _finished(client: httpx.Client, call_id: str, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        answer: dict[str, Any] = client.get(f"/calls/{call_id}").json()
        if answer["status"] != "pending" or time.monotonic() > deadline:
            return answer
        time.sleep(0.05)


def _submit(client: httpx.Client, body: Any) -> str:
    response = client.post("/calls", json=body)
    assert response.status_code == 202, response.text
    call_id: str = response.json()["call_id"]
    return call_id


def test_health_names_the_served_models_and_the_provider(client: httpx.Client) -> None:
    health = client.get("/health").json()

    assert health["ok"] is True
    assert health["models"] == ["embed:1", "embed:2"]
    assert health["provider"] == "CPUExecutionProvider"


def test_a_call_gives_the_cpu_paths_vectors_in_input_order(
    client: httpx.Client, declaration: Declaration, built_models: Path
) -> None:
    call_id = _submit(client, {"model": "embed", "version": "2", "inputs": TEXTS})

    answer = _finished(client, call_id)

    assert answer["status"] == "succeeded", answer
    cpu = load_model(
        ModelKey("embed", "2"), declaration.models["embed"], built_models, declaration.runtime
    )
    expected = np.asarray(cpu.runner.run(cpu.runner.check(TEXTS)))
    outputs = np.asarray(answer["outputs"])
    assert outputs.shape == expected.shape
    assert np.sum(outputs * expected, axis=1).min() >= 0.9999  # unit vectors: cosine
    assert client.get(f"/calls/{call_id}").json() == answer  # kept, and answered again
    assert client.delete(f"/calls/{call_id}").json() == answer  # finished: stays as it is


def test_what_the_gpu_layer_does_not_serve_is_404(client: httpx.Client) -> None:
    for body in (
        {"model": "digits", "version": "1", "inputs": [[0.0] * 64]},
        {"model": "embed", "version": "9", "inputs": ["text"]},
    ):
        response = client.post("/calls", json=body)
        assert response.status_code == 404
        assert "not served by the GPU layer" in response.json()["error"]
    assert client.get("/calls/fc-unknown").status_code == 404
    assert client.delete("/calls/fc-unknown").status_code == 404


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b'{"model": "embed", "version": 2, "inputs": []}', b'{"model": "embed"}'],
)
def test_a_malformed_body_is_400(client: httpx.Client, body: bytes) -> None:
    response = client.post("/calls", content=body, headers={"content-type": "application/json"})

    assert response.status_code == 400
    assert response.json()["error"]


def test_bad_inputs_fail_the_call_naming_the_input(client: httpx.Client) -> None:
    call_id = _submit(client, {"model": "embed", "version": "1", "inputs": ["fine", 3]})

    assert _finished(client, call_id) == {
        "status": "failed",
        "error": "InputError: inputs[1]: expected a string, got a number",
    }


def test_injected_errors_fail_calls(client: httpx.Client) -> None:
    assert client.put("/faults", json={"error": 1}).json() == {"error": 1.0, "hang": 0.0}
    assert client.get("/faults").json() == {"error": 1.0, "hang": 0.0}

    answer = _finished(client, _submit(client, {"model": "embed", "version": "1", "inputs": ["a"]}))

    assert answer["status"] == "failed"
    assert answer["error"].startswith("InjectedFault: ")


def test_a_hung_call_stays_pending_until_cancelled(client: httpx.Client) -> None:
    client.put("/faults", json={"hang": 1})
    call_id = _submit(client, {"model": "embed", "version": "1", "inputs": ["a"]})

    time.sleep(0.3)
    assert client.get(f"/calls/{call_id}").json() == {"status": "pending"}
    cancelled = client.delete(f"/calls/{call_id}")

    assert cancelled.status_code == 200
    assert cancelled.json() == {"status": "cancelled"}
    assert client.get(f"/calls/{call_id}").json() == {"status": "cancelled"}


def test_bad_fault_settings_are_400(client: httpx.Client) -> None:
    for body in ({"error": 2}, {"slow": 0.5}, {"error": "high"}):
        assert client.put("/faults", json=body).status_code == 400
    assert client.get("/faults").json() == {"error": 0.0, "hang": 0.0}


def test_a_bad_faults_variable_stops_the_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(os.environ, FAULTS_ENV, "error=often")

    with pytest.raises(ExecutorError, match="STRATOSERVE_GPU_FAULTS=error=often"):
        launch(DECLARATION_FILE, cwd=ROOT)


def test_faults_set_at_start_and_a_clean_stop(
    built_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(os.environ, FAULTS_ENV, "error=1,hang=0")
    process = launch(DECLARATION_FILE, cwd=ROOT)
    try:
        assert process.wait_ready()["faults"] == {"error": 1.0, "hang": 0.0}
    finally:
        process.stop()

    assert process.process.returncode is not None


def test_a_running_call_cancelled_stops_and_the_next_one_runs(client: httpx.Client) -> None:
    many = [f"sentence number {index} about nothing much" for index in range(600)]
    call_id = _submit(client, {"model": "embed", "version": "1", "inputs": many})

    assert client.delete(f"/calls/{call_id}").json() == {"status": "cancelled"}
    after = _finished(client, _submit(client, {"model": "embed", "version": "1", "inputs": ["a"]}))

    assert after["status"] == "succeeded"
    assert client.get(f"/calls/{call_id}").json() == {"status": "cancelled"}
