"""Warm-ups in the real handler module, in a fresh interpreter: only an origin that fans out
imports boto3; a target or a plain warm-up, like the predict path, never does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING

from stratoserve.declaration import function_environment as variables
from stratoserve.local.stack import function_configs
from tests.conftest import DECLARATION_FILE, ROOT

if TYPE_CHECKING:
    from pathlib import Path

    from stratoserve.declaration import Declaration

SCRIPT = """
import json, sys, time
from functions.api.handler import handler
from stratoserve.local.runtime_interface import LocalLambdaContext

def invoke(event):
    return handler(event, LocalLambdaContext("request", int(time.time() * 1000) + 10_000))

answers = [invoke({"warmup": True}), invoke({"warmup": {"target": True, "hold_ms": 0}})]
before_fan_out = "boto3" in sys.modules
# No endpoint answers here: the fan-out fails, counted, and boto3 is imported for it.
answers.append(invoke({"warmup": {"concurrency": 2}}))
print(json.dumps({"before": before_fan_out, "after": "boto3" in sys.modules, "answers": answers}))
"""


def test_boto3_is_imported_by_a_fan_out_only(declaration: Declaration, built_models: Path) -> None:
    environment = {
        **{name: value for name, value in os.environ.items() if not name.startswith("AWS_")},
        **function_configs(declaration, DECLARATION_FILE)["digits"].environment,
        "AWS_LAMBDA_FUNCTION_NAME": "digits",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        # Nothing listens on port 9: the fan-out's one call is refused at once.
        variables.LAMBDA_ENDPOINT_URL: "http://127.0.0.1:9",
    }

    ran = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    seen = json.loads(ran.stdout.strip().splitlines()[-1])

    assert seen["before"] is False, "a plain warm-up and a target left boto3 out"
    assert seen["after"] is True
    plain, target, origin = seen["answers"]
    assert plain["models"] == ["digits:1"] and plain["environments"] == [plain["environment_id"]]
    assert target["target"] is True and "environments" not in target
    assert origin["environments"] == [origin["environment_id"]]
    assert origin["failures"] == 1, "the refused call is counted, the warm-up still answers"
    assert len({plain["environment_id"], target["environment_id"]}) == 1, "one per init"
