"""`stratoserve dev` as a user runs it: a real server on a free port, real HTTP, the
dev key, API Gateway's answers, and every function in its own environments."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import httpx
import numpy as np
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from stratoserve.declaration import function_environment as variables
from stratoserve.local.aws import client as aws_client
from tests.conftest import ROOT, rest_event
from tests.integration.stratoserve.local.dev_stack import (
    KEY,
    Stack,
    cli,
    create_key,
    start_stack,
    stop_stack,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

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


@pytest.fixture(scope="module")
def stack(built_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(tmp_path_factory.mktemp("state"))
    yield running
    stop_stack(running)


def _cosine(a: list[float], b: list[float]) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_it_prints_the_url_the_key_and_a_curl_example(stack: Stack) -> None:
    printed = stack.log.read_text()

    assert f"listening on {stack.url}" in printed
    assert f"API key (STRATOSERVE_DEV_API_KEY): {KEY}" in printed
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


def test_the_worker_and_only_the_worker_gets_the_local_gpu_executor(stack: Stack) -> None:
    executor = json.loads((stack.state / "stack.json").read_text())["gpu_executor"]
    health = stack.client.get(executor["url"] + "/health", headers=stack.bearer()).json()

    assert health["models"] == ["embed:1", "embed:2"]
    assert f"run locally on {health['provider']}): embed:1, embed:2 at {executor['url']}" in (
        stack.log.read_text()
    )
    children = Path(f"/proc/{stack.process.pid}/task/{stack.process.pid}/children")
    assert executor["pid"] in {int(pid) for pid in children.read_text().split()}
    variable = f"{variables.GPU_EXECUTOR_URL}={executor['url']}".encode()
    for function in ("worker", "embed", "api"):
        (pid, *_) = stack.environments(function)
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert (variable in environ) is (function == "worker")


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


def test_function_logs_and_metrics_carry_context_and_never_the_key(stack: Stack) -> None:
    assert stack.post("/v2/predict/embed", {"inputs": ["log me"]}).status_code == 200

    def lines() -> list[dict[str, Any]]:
        text = stack.log.read_text().splitlines()
        return [json.loads(line) for line in text if line.startswith("{")]

    deadline = time.monotonic() + 10  # the function's stdout reaches the file a bit later
    while not any("ModelTime" in line for line in lines()) and time.monotonic() < deadline:
        time.sleep(0.2)
    logged = lines()
    last = [line for line in logged if line.get("message") == "predict"][-1]
    for field in ("request_id", "model", "version", "cold_start", "function_name", "tenant"):
        assert field in last
    assert last["tenant"] == "dev"
    # CloudWatch embedded metric format: per model and version, the tenant as a property.
    emf = [line for line in logged if "ModelTime" in line][-1]
    (directive,) = emf["_aws"]["CloudWatchMetrics"]
    assert {"Name": "ModelTime", "Unit": "Milliseconds"} in directive["Metrics"]
    assert sorted(directive["Dimensions"][0]) == ["model", "service", "version"]
    assert (emf["model"], emf["tenant"]) == ("embed", "dev")
    assert any("ModelLoadTime" in line for line in logged)
    assert KEY not in "\n".join(json.dumps(line) for line in logged)


def test_free_and_pro_keys_behave_as_their_plans_say(stack: Stack) -> None:
    free = create_key(stack, "acme", "free")
    pro = create_key(stack, "globex", "pro")
    assert (free["tenant"], free["plan"]) == ("acme", "free")

    def burst(key: str) -> list[httpx.Response]:
        with ThreadPoolExecutor(max_workers=8) as pool:
            return list(
                pool.map(
                    lambda _: stack.post("/v2/predict/digits", {"inputs": [DIGIT_ZERO]}, key=key),
                    range(30),
                )
            )

    started = time.monotonic()
    free_answers = burst(free["key"])
    elapsed = time.monotonic() - started
    pro_answers = burst(pro["key"])

    throttled = [answer for answer in free_answers if answer.status_code == 429]
    admitted = [answer for answer in free_answers if answer.status_code == 200]
    assert throttled, "30 requests at once exceed the free plan's burst of 10"
    assert {answer.content for answer in throttled} == {b'{"message":"Too Many Requests"}'}
    # burst 10, refilling at 5/s while the 30 requests were answered
    assert 10 <= len(admitted) <= 10 + 5 * elapsed + 1
    assert [answer.status_code for answer in pro_answers] == [200] * 30

    not_in_plan = stack.post("/v2/predict/embed", {"inputs": ["hello"]}, key=pro["key"])
    assert not_in_plan.status_code == 200
    time.sleep(1)  # let the free bucket refill a token
    refused = stack.post("/v2/predict/embed", {"inputs": ["hello"]}, key=free["key"])
    assert refused.status_code == 403
    assert refused.json() == {"message": "plan free does not include model embed"}


def test_keys_are_listed_metered_and_revoked_at_once(stack: Stack) -> None:
    issued = create_key(stack, "initech", "pro")
    for _ in range(3):
        assert (
            stack.post("/v2/predict/embed", {"inputs": ["x"]}, key=issued["key"]).status_code == 200
        )

    listed = json.loads(cli(stack, "keys", "list", "--json").stdout)
    mine = next(key for key in listed if key["tenant"] == "initech")
    assert (mine["plan"], mine["enabled"], mine["key_id"]) == ("pro", True, issued["key_id"])
    assert issued["key"] not in json.dumps(listed)

    usage: dict[str, Any] = {}
    deadline = time.monotonic() + 30  # the gateway writes usage every 2 s
    while usage.get("initech", {}).get("requests") != 3 and time.monotonic() < deadline:
        time.sleep(0.5)
        usage = json.loads(cli(stack, "keys", "usage", "--tenant", "initech", "--json").stdout)
    assert usage["initech"]["requests"] == 3
    assert usage["initech"]["model_ms"] > 0
    assert usage["initech"]["quota"]["used"] == 3

    revoked = cli(stack, "keys", "revoke", "--tenant", "initech")
    assert revoked.returncode == 0, revoked.stderr
    after = stack.post("/v2/predict/embed", {"inputs": ["x"]}, key=issued["key"])
    assert after.status_code == 403
    assert after.content == b'{"message":"Forbidden"}'


def test_metrics_count_requests_by_tenant_route_and_status(stack: Stack) -> None:
    stack.post("/v2/predict/digits", {"inputs": [DIGIT_ZERO]})
    stack.post("/v2/predict/digits", {"inputs": [DIGIT_ZERO]}, key=None)

    metrics = stack.client.get("/metrics", headers=stack.bearer()).text

    assert (
        'stratoserve_requests_total{route="/v2/predict/digits",status="200",tenant="dev"}'
        in metrics
    )
    assert (
        'stratoserve_requests_total{route="/v2/predict/digits",status="403",tenant="-"}' in metrics
    )
    assert 'stratoserve_model_duration_seconds_count{model="digits",version="1"}' in metrics
    assert "stratoserve_init_duration_seconds_count" in metrics


def test_anonymous_metrics_name_no_tenant_and_a_key_sees_its_own(stack: Stack) -> None:
    stack.post("/v2/predict/digits", {"inputs": [DIGIT_ZERO]})
    stack.post("/v2/predict/digits", {"inputs": [DIGIT_ZERO]}, key=None)

    anonymous = stack.client.get("/metrics").text
    keyed = stack.client.get("/metrics", headers={"x-api-key": KEY}).text
    unknown = stack.client.get("/metrics", headers={"x-api-key": "not-a-key-of-this-stack"})

    assert "tenant=" not in anonymous
    assert 'stratoserve_requests_total{route="/v2/predict/digits",status="200"}' in anonymous
    assert 'tenant="dev"' in keyed
    assert 'tenant="-"' not in keyed  # only the key's own tenant
    assert unknown.status_code == 403


def test_the_token_is_in_a_private_stack_json_in_a_private_folder(stack: Stack) -> None:
    assert stat.S_IMODE(stack.state.stat().st_mode) == 0o700
    assert stat.S_IMODE((stack.state / "stack.json").stat().st_mode) == 0o600
    assert len(stack.record()["token"]) >= 40


def test_the_invoke_api_refuses_pages_strangers_and_plain_text(stack: Stack) -> None:
    """Another tenant's event, POSTed as any web page or local user could."""
    url = f"{stack.record()['lambda_url']}/2015-03-31/functions/api/invocations"
    event = rest_event("GET", "/v1/models")
    event["requestContext"]["identity"]["apiKeyId"] = "another-tenants-key-id"
    body = json.dumps(event).encode()
    bearer = stack.bearer()
    refused = {
        "text/plain, no token": ({"content-type": "text/plain"}, 415),
        "no token": ({}, 403),
        "a wrong token": ({"Authorization": "Bearer not-the-token"}, 403),
        "an Origin": ({**bearer, "Origin": "https://example.com"}, 403),
        "another Host": ({**bearer, "Host": "rebound.example.com"}, 403),
        "text/plain": ({**bearer, "content-type": "text/plain"}, 415),
    }
    for case, (headers, status) in refused.items():
        response = httpx.post(url, content=body, headers=headers, timeout=30)
        assert response.status_code == status, case
        assert "x-amzn-errortype" in response.headers, case

    health = json.dumps(rest_event("GET", "/health")).encode()
    assert httpx.post(url, content=health, headers=bearer, timeout=30).status_code == 200


def test_the_invoke_api_takes_sigv4_made_with_the_token_only(stack: Stack) -> None:
    record = stack.record()
    event = json.dumps(rest_event("GET", "/health")).encode()

    def invoke(secret: str) -> Any:
        lambda_client = boto3.client(
            "lambda",
            endpoint_url=record["lambda_url"],
            region_name="us-east-1",
            aws_access_key_id="local",
            aws_secret_access_key=secret,
            config=Config(retries={"total_max_attempts": 1}),
        )
        return lambda_client.invoke(FunctionName="api", Payload=event)

    assert invoke(record["token"])["StatusCode"] == 200
    with pytest.raises(ClientError, match="InvalidSignatureException"):
        invoke("local")


def test_the_fault_api_and_the_gpu_executor_want_the_token(stack: Stack) -> None:
    record = stack.record()
    faults = f"{record['lambda_url']}/_stratoserve/faults"
    executor = record["gpu_executor"]["url"]
    bearer = stack.bearer()

    restart = httpx.post(f"{faults}/aws-restart", json={"down_s": 0}, timeout=30)
    assert restart.status_code == 403
    plain = httpx.post(
        f"{faults}/aws-restart", content=b"{}", headers={**bearer, "content-type": "text/plain"}
    )
    assert plain.status_code == 415
    assert httpx.get(faults, headers=bearer).json()["aws"]["restarts"] == 0

    assert httpx.get(f"{executor}/faults").status_code == 401
    assert httpx.get(f"{executor}/faults", headers={**bearer, "Origin": "null"}).status_code == 403
    text = httpx.put(
        f"{executor}/faults",
        content=b'{"error": 1}',
        headers={**bearer, "content-type": "text/plain"},
    )
    assert text.status_code == 415
    assert httpx.get(f"{executor}/faults", headers=bearer).json() == {"error": 0.0, "hang": 0.0}


def test_moto_hands_key_values_only_to_the_stacks_credentials_and_no_cors(stack: Stack) -> None:
    record = stack.record()
    aws_url = record["aws_url"]

    anonymous = httpx.get(f"{aws_url}/apikeys?includeValues=true", timeout=30)
    with pytest.raises(ClientError):  # moto's well-known test credentials
        aws_client("apigateway", aws_url).get_api_keys(includeValues=True)
    preflight = httpx.options(
        f"{aws_url}/apikeys",
        headers={"Origin": "https://example.com", "Access-Control-Request-Method": "GET"},
    )
    answer = aws_client("apigateway", aws_url, record["token"]).get_api_keys(includeValues=True)

    assert anonymous.status_code == 403 and KEY not in anonymous.text
    assert preflight.status_code == 403
    assert not any(name.startswith("access-control-") for name in preflight.headers)
    assert KEY in [key.get("value") for key in answer["items"]]
    headers = answer["ResponseMetadata"]["HTTPHeaders"]
    assert not any(name.startswith("access-control-") for name in headers)


def test_request_headers_are_capped_as_api_gateway_caps_them(stack: Stack) -> None:
    over = stack.client.get("/v1/models", headers={"x-api-key": KEY, "x-padding": "a" * 11000})
    assert over.status_code == 431
    assert over.json() == {"message": "Request Header Fields Too Large"}
    fine = stack.client.get("/v1/models", headers={"x-api-key": KEY, "x-padding": "a" * 9000})
    assert fine.status_code == 200

    host, port = stack.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        # Headers that never end: the server stops reading and answers, not buffers.
        connection.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nx-padding: " + b"a" * 100_000)
        time.sleep(0.5)
        try:
            answer = connection.recv(4096)
        except ConnectionResetError:
            answer = b"HTTP/1.1 431 (reset)"
    assert answer.startswith(b"HTTP/1.1 431")


def test_only_the_worker_gets_the_callback_signing_key(stack: Stack) -> None:
    for function in ("worker", "embed", "api", "digits"):
        (pid, *_) = stack.environments(function)
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        prefix = f"{variables.CALLBACK_SIGNING_KEY}=".encode()
        has_key = any(item.startswith(prefix) for item in environ)
        assert has_key is (function == "worker"), function


def test_the_cli_without_a_running_stack_says_what_to_do(tmp_path: Path) -> None:
    env = {**os.environ, "STRATOSERVE_STATE_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "stratoserve.cli", "keys", "list"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 2
    assert "no local stack is running: start `stratoserve dev` first" in result.stderr


def test_keys_and_quota_counters_survive_a_restart(built_models: Path, tmp_path: Path) -> None:
    first = start_stack(tmp_path)
    try:
        issued = create_key(first, "umbrella", "free")
        for _ in range(2):
            answer = first.post("/v2/predict/digits", {"inputs": [DIGIT_ZERO]}, key=issued["key"])
            assert answer.status_code == 200
    finally:
        stop_stack(first)

    second = start_stack(tmp_path)
    try:
        again = second.post("/v2/predict/digits", {"inputs": [DIGIT_ZERO]}, key=issued["key"])
        assert again.status_code == 200
        stop_stack(second)  # writes the counters at once
        usage = json.loads(cli(second, "keys", "usage", "--tenant", "umbrella", "--json").stdout)
    finally:
        stop_stack(second)

    assert usage["umbrella"]["requests"] == 3
    assert usage["umbrella"]["quota"]["used"] == 3
    assert usage["umbrella"]["quota"]["limit"] == 1000
