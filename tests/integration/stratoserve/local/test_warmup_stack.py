"""Warm-ups through the real local stack: the scheduler warms the declared number of api
environments at start, a warm-up fans out through the local Lambda Invoke API into
distinct environments, and boto3's own lambda client invokes the local functions."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.config import Config

from functions.runtime.warmup import warmup_event
from tests.integration.stratoserve.local.dev_stack import Stack, start_stack, stop_stack

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

API_ARN = "arn:aws:lambda:us-east-1:123456789012:function:api"
# Digits only and no GPU layer: the stack starts in seconds, and the api function's
# warm-up is the shipped one.
DECLARATION = """
[project]
name = "warmup-test"
models_dir = "{models}"

[models.digits]
task = "classify"
[models.digits.versions.1]
artifact = "digits/1/model.onnx"

[api.v1]
models = {{ digits = "1" }}

[functions.api]
memory_mb = 512
timeout_s = 10
local_environments = 2

[functions.api.warmup]
schedule = "rate(5 minutes)"
concurrency = 2
"""


@pytest.fixture(scope="module")
def stack(built_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state = tmp_path_factory.mktemp("warmup-state")
    config = state / "stratoserve.toml"
    config.write_text(DECLARATION.format(models=built_models))
    running = start_stack(state, config)
    yield running
    stop_stack(running)


@pytest.fixture(scope="module")
def start_warmup(stack: Stack) -> str:
    """The scheduler's log line about the warm-up it sent at start, once it is answered
    (later tests would otherwise race it for the api environments)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for line in stack.log.read_text().splitlines():
            if "warm-up of api:" in line:
                return line
        time.sleep(0.1)
    pytest.fail(f"no warm-up of api was logged:\n{stack.log.read_text()}")


@pytest.fixture(scope="module")
def lambda_client(stack: Stack) -> Any:
    """boto3's lambda client, pointed at the running stack's Invoke API."""
    record = json.loads((stack.state / "stack.json").read_text())
    return boto3.client(
        "lambda",
        endpoint_url=record["lambda_url"],
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key=record["token"],  # the stack's credentials: SigV4, as on AWS
        config=Config(retries={"mode": "standard", "total_max_attempts": 1}),
    )


def _invoke(client: Any, function: str, event: Any) -> tuple[dict[str, Any], Any]:
    response = client.invoke(FunctionName=function, Payload=json.dumps(event).encode())
    return response, json.loads(response["Payload"].read())


def test_the_start_warmup_leaves_two_api_environments_warm(stack: Stack, start_warmup: str) -> None:
    assert "warm-up of api: 2 of 2 environment(s) warm" in start_warmup
    assert "failed" not in start_warmup
    assert len(stack.environments("api")) == 2
    banner = stack.log.read_text()
    assert "warm-up: api, 2 environment(s), rate(5 minutes) (UTC)" in banner


def test_a_warmup_of_two_reaches_two_distinct_warm_environments(
    stack: Stack, start_warmup: str, lambda_client: Any
) -> None:
    before = set(stack.environments("api"))

    response, answer = _invoke(lambda_client, API_ARN, warmup_event(2))

    assert response["StatusCode"] == 200 and "FunctionError" not in response
    assert answer["function"] == "api"
    assert len(set(answer["environments"])) == 2
    assert answer["environment_id"] in answer["environments"]
    assert (answer["cold"], answer["failures"]) == (0, 0), "the start's warm-up warmed both"
    assert set(stack.environments("api")) == before, "no new environment, none lost"


def test_boto3_invokes_local_functions_by_name_and_sees_their_errors(
    start_warmup: str, lambda_client: Any
) -> None:
    response, answer = _invoke(lambda_client, "digits:live", {"warmup": True})
    assert response["StatusCode"] == 200
    assert answer["models"] == ["digits:1"] and answer["environments"] == [answer["environment_id"]]

    failed, error = _invoke(lambda_client, "digits", {"not": "an API Gateway event"})
    assert failed["StatusCode"] == 200
    assert failed["FunctionError"] == "Unhandled"
    assert error["errorType"] == "RuntimeError"

    with pytest.raises(lambda_client.exceptions.ResourceNotFoundException):
        lambda_client.invoke(FunctionName="no-such-function", Payload=b"{}")


def test_warmups_are_no_user_requests(stack: Stack, start_warmup: str) -> None:
    metrics = stack.client.get("/metrics").text

    assert "stratoserve_requests_total{" not in metrics
    assert 'stratoserve_cold_starts_total{function="api"}' not in metrics
