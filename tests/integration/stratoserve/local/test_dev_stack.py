"""`stratoserve dev` as a user runs it: a real server on a free port, real HTTP, the
dev key, API Gateway's answers, and every function in its own environments."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pytest

from tests.conftest import ROOT

if TYPE_CHECKING:
    from collections.abc import Iterator

KEY = "local-dev-key-for-the-test-suite"
PAIR = ["A man is eating food.", "A man is eating a piece of bread."]
DIGIT_ZERO = [
    0,
    0,
    5,
    13,
    9,
    1,
    0,
    0,
    0,
    0,
    13,
    15,
    10,
    15,
    5,
    0,
    0,
    3,
    15,
    2,
    0,
    11,
    8,
    0,
    0,
    4,
    12,
    0,
    0,
    8,
    8,
    0,
    0,
    5,
    8,
    0,
    0,
    9,
    8,
    0,
    0,
    4,
    11,
    0,
    1,
    12,
    7,
    0,
    0,
    2,
    14,
    5,
    10,
    12,
    0,
    0,
    0,
    0,
    6,
    13,
    10,
    0,
    0,
    0,
]


class Stack:
    def __init__(self, process: subprocess.Popen[str], url: str, log: Path, state: Path) -> None:
        self.process = process
        self.url = url
        self.log = log
        self.state = state
        self.client = httpx.Client(base_url=url, timeout=60)

    def post(self, path: str, body: Any, key: str | None = KEY) -> httpx.Response:
        headers = {"x-api-key": key} if key else {}
        return self.client.post(path, json=body, headers=headers)

    def environments(self, function: str) -> list[int]:
        """pids of the function's local execution environments."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        pids = [int(pid) for pid in children.read_text().split()]
        found = []
        for pid in pids:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if f"AWS_LAMBDA_FUNCTION_NAME={function}".encode() in environ:
                found.append(pid)
        return found


@pytest.fixture(scope="module")
def stack(built_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state = tmp_path_factory.mktemp("state")
    log = state / "dev.log"
    env = {**os.environ, "STRATOSERVE_STATE_DIR": str(state)}
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "stratoserve.cli", "dev", "--port", "0", "--api-key", KEY],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
        )
    record = state / "stack.json"
    deadline = time.monotonic() + 180
    while not record.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"stratoserve dev did not start:\n{log.read_text()}")
        time.sleep(0.2)
    running = Stack(process, json.loads(record.read_text())["url"], log, state)
    yield running
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


def _cosine(a: list[float], b: list[float]) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_it_prints_the_url_the_key_and_a_curl_example(stack: Stack) -> None:
    printed = stack.log.read_text()

    assert f"listening on {stack.url}" in printed
    assert f"API key (--api-key): {KEY}" in printed
    assert f"curl -s {stack.url}/v2/models -H 'x-api-key: {KEY}'" in printed


def test_missing_or_unknown_keys_get_api_gateways_exact_403(stack: Stack) -> None:
    for key in (None, "not-the-key-but-long-enough"):
        response = stack.post("/v1/predict/digits", {"inputs": [DIGIT_ZERO]}, key=key)
        assert response.status_code == 403
        assert response.content == b'{"message":"Forbidden"}'
        assert response.headers["content-type"] == "application/json"

    wrong_method = stack.client.get("/v1/predict/digits", headers={"x-api-key": KEY})
    assert wrong_method.status_code == 403
    assert wrong_method.content == b'{"message":"Missing Authentication Token"}'


def test_health_needs_no_key(stack: Stack) -> None:
    response = stack.client.get("/health")

    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_digits_and_embeddings_from_v1_and_v2(stack: Stack) -> None:
    digits = stack.post("/v1/predict/digits", {"inputs": [DIGIT_ZERO]})
    v1 = stack.post("/v1/predict/embed", {"inputs": PAIR})
    v2 = stack.post("/v2/predict/embed", {"inputs": PAIR})

    assert digits.status_code == v1.status_code == v2.status_code == 200
    assert digits.json()["outputs"][0]["label"] == 0
    assert _cosine(*v1.json()["outputs"]) == pytest.approx(0.755, abs=0.01)
    assert v1.headers["x-model-version"] == "1"
    assert v2.headers["x-model-version"] == "2"
    assert v1.headers["deprecation"] == "@1790812800"
    assert "deprecation" not in v2.headers
    # One id end to end: the gateway's request id is the one the function answers with.
    assert v2.headers["x-request-id"] == v2.headers["x-amzn-requestid"]


def test_bad_requests_pass_through_as_the_functions_4xx(stack: Stack) -> None:
    malformed = stack.client.post("/v2/predict/embed", content=b"{nope", headers={"x-api-key": KEY})
    unknown = stack.post("/v2/predict/nothing", {"inputs": ["x"]})

    assert malformed.status_code == 400
    assert "not valid JSON" in malformed.json()["message"]
    assert unknown.status_code == 404
    assert "unknown model nothing" in unknown.json()["message"]


def test_a_digits_request_never_waits_on_a_busy_embed_function(stack: Stack) -> None:
    long_texts = [" ".join(["token"] * 250) + f" {n}" for n in range(64)]

    def timed(path: str, body: Any) -> tuple[int, float]:
        response = stack.post(path, body)
        return response.status_code, time.monotonic()

    with ThreadPoolExecutor(max_workers=2) as pool:
        slow = pool.submit(timed, "/v1/predict/embed", {"inputs": long_texts})
        time.sleep(0.05)
        fast = pool.submit(timed, "/v1/predict/digits", {"inputs": [DIGIT_ZERO]})
        (slow_status, slow_done), (fast_status, fast_done) = slow.result(), fast.result()

    assert slow_status == fast_status == 200
    assert fast_done < slow_done


def test_a_killed_environment_is_replaced_by_a_cold_start(stack: Stack) -> None:
    assert stack.post("/v1/predict/digits", {"inputs": [DIGIT_ZERO]}).status_code == 200
    victims = stack.environments("digits")
    assert victims

    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    # At once: an environment that died while idle must not answer 502.
    response = stack.post("/v1/predict/digits", {"inputs": [DIGIT_ZERO]})

    assert response.status_code == 200
    assert not set(stack.environments("digits")) & set(victims)


def test_function_logs_carry_context_and_never_the_key(stack: Stack) -> None:
    stack.post("/v2/predict/embed", {"inputs": ["log me"]})
    time.sleep(0.3)

    lines = [
        json.loads(line) for line in stack.log.read_text().splitlines() if line.startswith("{")
    ]
    predicts = [line for line in lines if line.get("message") == "predict"]

    assert predicts
    last = predicts[-1]
    for field in ("request_id", "model", "version", "cold_start", "function_name"):
        assert field in last
    assert KEY not in "\n".join(json.dumps(line) for line in lines)
