"""`stratoserve.testing` in a user's project: one session of its tests against a real
`stratoserve dev` (real HTTP, keys and plans), moto, and sample events."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from tests.conftest import DECLARATION_FILE

if TYPE_CHECKING:
    from tests.integration.stratoserve.testing.user_project import UserProject

USER_TESTS = """
import json

import pytest

from stratoserve.client import ThrottledError

ZERO = [0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0, 0, 3, 15, 2, 0, 11, 8, 0, 0, 4,
        12, 0, 0, 8, 8, 0, 0, 5, 8, 0, 0, 9, 8, 0, 0, 4, 11, 0, 1, 12, 7, 0, 0, 2, 14, 5, 10,
        12, 0, 0, 0, 0, 6, 13, 10, 0, 0, 0]


def test_predicts_a_digit(stratoserve_client):
    assert stratoserve_client.predict("digits", [ZERO]).outputs[0]["label"] == 0


def test_a_job_finishes(stratoserve_client):
    job = stratoserve_client.submit("digits", [ZERO] * 3)
    outputs = job.wait(timeout_s=120).outputs
    assert [output["label"] for output in outputs] == [0, 0, 0]


def test_the_free_plan_is_throttled(stratoserve_client_for):
    free = stratoserve_client_for("free", max_retries=0)
    with pytest.raises(ThrottledError):
        for _ in range(200):
            free.predict("digits", [ZERO])


def test_a_key_per_plan_on_a_test_tenant(stratoserve_stack):
    assert set(stratoserve_stack.keys) == set(stratoserve_stack.declaration.plans)
    listed = stratoserve_stack.cli("keys", "list", "--json")
    tenants = {key["tenant"] for key in json.loads(listed.stdout)}
    assert {"test-free", "test-pro"} <= tenants


def test_moto_has_the_job_resources(stratoserve_aws):
    sqs = stratoserve_aws.client("sqs")
    sqs.send_message(QueueUrl=stratoserve_aws.resources.queue_url, MessageBody="{}")
    tables = stratoserve_aws.client("dynamodb").list_tables()["TableNames"]
    assert stratoserve_aws.resources.table in tables
    assert stratoserve_aws.environment()["STRATOSERVE_JOBS_QUEUE_URL"]


def test_moto_is_emptied_between_tests(stratoserve_aws):
    sqs = stratoserve_aws.client("sqs")
    answer = sqs.receive_message(QueueUrl=stratoserve_aws.resources.queue_url)
    assert answer.get("Messages", []) == []


def test_sample_events(stratoserve_events):
    event = stratoserve_events.predict("digits", [ZERO])
    assert (event["httpMethod"], event["resource"]) == ("POST", "/v2/predict/digits")
    assert json.loads(event["body"]) == {"inputs": [ZERO]}
    job = stratoserve_events.api("GET", "/v1/jobs/abc")
    assert job["pathParameters"] == {"job_id": "abc"}
    records = stratoserve_events.sqs(stratoserve_events.job_message("digits", [ZERO]))
    assert json.loads(records["Records"][0]["body"])["model"] == "digits"
    assert stratoserve_events.scheduled()["detail-type"] == "Scheduled Event"
    assert stratoserve_events.warmup("api") == {"warmup": {"concurrency": 2}}
    assert stratoserve_events.context().get_remaining_time_in_millis() > 0
"""


def test_a_user_session_predicts_runs_a_job_and_is_throttled(user_project: UserProject) -> None:
    user_project.write_test("test_project.py", USER_TESTS)
    basetemp = user_project.root / "basetemp"

    result = user_project.pytest("--basetemp", str(basetemp))

    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b7 passed\b", result.stdout), result.stdout
    # The session's stack stopped cleanly: it removes its stack.json on the way out.
    states = list(basetemp.glob("stratoserve-state[0-9]*"))
    assert len(states) == 1
    assert not (states[0] / "stack.json").exists()


def test_models_not_built_is_one_clear_line(user_project: UserProject) -> None:
    """A declaration whose models are not built: every test that needs the stack fails
    with one line that says what to run, before any stack starts."""
    project = user_project.root / "project"
    project.mkdir()
    (project / "stratoserve.toml").write_text(DECLARATION_FILE.read_text())
    user_project.write_test(
        "test_project.py", "def test_health(stratoserve_client):\n    stratoserve_client.health()\n"
    )

    result = user_project.pytest("--stratoserve-config", str(project / "stratoserve.toml"))

    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stdout.splitlines() if "stratoserve.testing:" in line]
    assert errors, result.stdout
    assert "run `stratoserve models build` first" in errors[0]
    assert "Traceback" not in result.stdout
    assert "During handling" not in result.stdout
