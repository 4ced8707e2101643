"""Fuzzing `stratoserve dev` from its own OpenAPI schema: schemathesis (`st run`, in its own
process) sends generated requests, valid and invalid, through the local gateway to the
real functions, with a tenant's valid API key.

Every answer must be a documented status with a body that matches the schema, never a
5xx, never a stack trace, never the key (tests/soak/fuzz_checks.py); afterwards neither
the key nor a traceback may appear in anything the stack logged.

The run is bounded and reproducible: deterministic generation (the same cases every run),
a fixed number of examples per operation, one worker.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from stratoserve.declaration.routes import PROXY_RESOURCE, RouteTable
from tests.conftest import ROOT
from tests.integration.stratoserve.local.dev_stack import (
    Stack,
    create_key,
    lines,
    start_stack,
    stop_stack,
)
from tests.soak.fuzz_checks import KEY_VARIABLE

if TYPE_CHECKING:
    from collections.abc import Iterator

    from stratoserve.declaration import Declaration

pytestmark = pytest.mark.soak

MAX_EXAMPLES = 25
"""Per operation, in the fuzzing phase (the coverage phase adds its own boundary cases)."""
RUN_TIMEOUT_S = 300
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "ignored_auth",
    "no_stack_trace",
    "no_key_echo",
    "reaches_the_api",
]
TRACEBACK = re.compile(r'Traceback \(most recent call last\)|File "[^"]*", line \d+')


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, built_models: Path) -> Iterator[Stack]:
    running = start_stack(tmp_path_factory.mktemp("fuzz-stack"))
    yield running
    stop_stack(running)


@pytest.fixture(scope="module")
def key(stack: Stack) -> str:
    """A tenant's own key on the generous plan: random, so any echo of it is unmistakable
    (and not throttled at the fuzzer's pace)."""
    return create_key(stack, "fuzz", "pro")["key"]


@pytest.fixture(scope="module")
def schema(stack: Stack, key: str) -> dict[str, Any]:
    """The schema as a client gets it: from the api function, through the gateway's proxy
    resource, with a key."""
    served = stack.client.get("/openapi.json", headers={"x-api-key": key})
    assert served.status_code == 200, served.text
    document: dict[str, Any] = served.json()
    return document


def test_schema_needs_a_key(stack: Stack) -> None:
    assert stack.client.get("/openapi.json").status_code == 403


def test_schema_describes_every_route_of_the_gateway(
    schema: dict[str, Any], declaration: Declaration
) -> None:
    gateway = {
        (route.resource, method.lower())
        for route in RouteTable.from_declaration(declaration).routes()
        if route.resource != PROXY_RESOURCE
        for method in route.methods
    }
    documented = {(path, method) for path, item in schema["paths"].items() for method in item}
    assert gateway <= documented, f"not in the schema: {sorted(gateway - documented)}"
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method == "post":
                body = operation["requestBody"]["content"]["application/json"]["schema"]
                assert body, f"{method} {path}: no request body schema"
            template = set(re.findall(r"{(\w+)}", path))
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert template == declared, f"{method} {path}: path parameters {declared}"
            if path != "/health":
                assert operation["security"] == [{"api_key": []}], f"{method} {path}"
            success = [status for status in operation["responses"] if status.startswith("2")]
            for status in success:
                content = operation["responses"][status]["content"]["application/json"]
                assert content["schema"], f"{method} {path} {status}: no answer schema"


def test_fuzz(
    stack: Stack,
    key: str,
    schema: dict[str, Any],
    declaration: Declaration,
    built_models: Path,
    tmp_path: Path,
) -> None:
    location = tmp_path / "openapi.json"
    location.write_text(json.dumps(pin_row_widths(schema, declaration, built_models)))
    started = time.monotonic()
    run = subprocess.run(
        [
            str(Path(sys.executable).with_name("st")),
            "run",
            str(location),
            "--url",
            stack.url,
            "--header",
            f"x-api-key: {key}",
            "--checks",
            ",".join(CHECKS),
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--max-examples",
            str(MAX_EXAMPLES),
            # Derandomized: the same cases every run (and no example database kept).
            "--generation-deterministic",
            "--workers",
            "1",
            # The gateway's own integration timeout is 29 s: anything longer is its 504.
            "--request-timeout",
            "35",
            "--no-color",
            "--report",
            "junit",
            "--report-dir",
            str(tmp_path / "report"),
        ],
        cwd=tmp_path,
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "SCHEMATHESIS_HOOKS": "tests.soak.fuzz_checks",
            KEY_VARIABLE: key,
        },
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    took = time.monotonic() - started
    report = run.stdout + run.stderr
    assert run.returncode == 0, f"schemathesis found problems ({took:.0f} s):\n{report}"
    assert "Test cases:" in report, report

    logged = stack.log.read_text()
    assert key not in logged, "the API key is in the stack's log"
    assert TRACEBACK.search(logged) is None, f"a traceback in the stack's log:\n{logged[-5000:]}"
    for line in lines(stack):
        assert "exception" not in line, f"an exception was logged: {line}"
        # A function answering the fuzzer logs no error: a request it cannot serve is the
        # caller's 4xx. (The worker logs each failed job attempt as an error: the fault
        # suite judges how it retries.)
        if line.get("function_name") != "worker":
            assert line.get("level") != "ERROR", f"an error was logged: {line}"


def pin_row_widths(
    schema: dict[str, Any], declaration: Declaration, built_models: Path
) -> dict[str, Any]:
    """The schema with each classifier's row width, which only its built ONNX graph knows,
    so that generated rows reach the model instead of stopping at the width check."""
    pinned = json.loads(json.dumps(schema))
    for path, item in pinned["paths"].items():
        body = item.get("post", {}).get("requestBody")
        if body is None:
            continue
        api_version = path.split("/")[1]
        shape = body["content"]["application/json"]["schema"]
        for choice in shape.get("oneOf", [shape]):
            model = choice["properties"].get("model", {}).get("const") or path.rsplit("/", 1)[-1]
            if declaration.models[model].task == "classify":
                version = declaration.served_version(api_version, model)
                artifact = built_models / declaration.models[model].versions[version].artifact
                row = choice["properties"]["inputs"]["items"]
                row["minItems"] = row["maxItems"] = _row_width(artifact)
    return pinned


def _row_width(artifact: Path) -> int:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(artifact), providers=["CPUExecutionProvider"])
    width = session.get_inputs()[0].shape[-1]
    assert isinstance(width, int), f"{artifact}: no fixed row width"
    return width
