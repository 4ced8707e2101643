"""Deploy settings (read by the CDK app): functions.<name>.package, warmup, scaling and the
[deploy] table. Combinations AWS would refuse are named by the loader, one line each."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from stratoserve.declaration import load_declaration
from tests.conftest import DECLARATION_FILE
from tests.unit.stratoserve.declaration.minimal import declaration_problems, write_declaration

if TYPE_CHECKING:
    from pathlib import Path


_write = write_declaration
_problems = declaration_problems


def test_the_shipped_declaration() -> None:
    declaration = load_declaration(DECLARATION_FILE)
    functions = declaration.functions
    assert functions["worker"].package == "image"
    assert functions["digits"].snapstart and not functions["digits"].provisioned_concurrency
    embed = functions["embed"]
    assert embed.provisioned_concurrency == 1 and embed.scaling is not None
    assert [scheduled.min for scheduled in embed.scaling.schedules] == [2, 1]
    warmup = functions["api"].warmup
    assert warmup is not None and (warmup.schedule, warmup.concurrency) == ("rate(5 minutes)", 2)
    assert declaration.deploy.deployment == "LambdaCanary10Percent5Minutes"


def test_defaults(tmp_path: Path) -> None:
    declaration = load_declaration(_write(tmp_path, "[functions.digits]\nmodels = ['digits']\n"))
    digits = declaration.functions["digits"]
    assert (digits.package, digits.warmup, digits.scaling) == ("zip", None, None)
    assert declaration.deploy.log_retention_days == 30
    assert declaration.deploy.alarm_email is None


def test_snapstart_is_for_zip_functions(tmp_path: Path) -> None:
    extra = "[functions.digits]\nmodels = ['digits']\npackage = 'image'\nsnapstart = true\n"
    assert _problems(tmp_path, extra) == [
        'functions.digits.snapstart: SnapStart needs package = "zip" (not for container images)'
    ]


def test_concurrency_within_the_reserved(tmp_path: Path) -> None:
    extra = """
    [functions.digits]
    models = ["digits"]
    reserved_concurrency = 2
    provisioned_concurrency = 3
    warmup = { concurrency = 4 }
    """
    assert _problems(tmp_path, extra) == [
        "functions.digits.provisioned_concurrency: 3 is more than reserved_concurrency (2)",
        "functions.digits.warmup.concurrency: 4 is more than reserved_concurrency (2)",
    ]


def test_scaling_needs_provisioned_concurrency_within_its_bounds(tmp_path: Path) -> None:
    without = "[functions.digits]\nmodels = ['digits']\nscaling = { max = 4 }\n"
    assert _problems(tmp_path, without) == [
        "functions.digits.scaling: scales provisioned concurrency; declare provisioned_concurrency"
    ]
    extra = """
    [functions.digits]
    models = ["digits"]
    provisioned_concurrency = 5
    [functions.digits.scaling]
    max = 4
    schedules = [{ schedule = "cron(0 7 ? * MON-FRI *)", min = 3, max = 2 }]
    """
    assert _problems(tmp_path, extra) == [
        "functions.digits.scaling.max: must be at least provisioned_concurrency (5)",
        "functions.digits.scaling.schedules[0].min: must not be more than max",
    ]


@pytest.mark.parametrize(
    "schedule",
    [
        "every 5 minutes",
        "rate(0 minutes)",
        "rate(5 weeks)",
        "rate(1 minutes)",
        "rate(5 hour)",
        "cron(0 7 * * *)",
    ],
)
def test_a_schedule_eventbridge_would_refuse(tmp_path: Path, schedule: str) -> None:
    extra = f"[functions.digits]\nmodels = ['digits']\nwarmup = {{ schedule = '{schedule}' }}\n"
    (problem,) = _problems(tmp_path, extra)
    assert problem.startswith("functions.digits.warmup.schedule:")


def test_deploy_table(tmp_path: Path) -> None:
    extra = """
    [deploy]
    deployment = "LambdaCanary50Percent1Minute"
    log_retention_days = 31
    alarm_email = "not an address"
    """
    problems = _problems(tmp_path, extra)
    assert sorted(problem.split(":")[0] for problem in problems) == [
        "deploy.alarm_email",
        "deploy.deployment",
        "deploy.log_retention_days",
    ]


def test_names_and_timeouts_aws_would_refuse(tmp_path: Path) -> None:
    long_name = "f" * 40
    extra = f"""
    [project]
    name = "{"p" * 25}"
    [functions.{long_name}]
    models = ["digits"]
    timeout_s = 30
    """
    assert _problems(tmp_path, extra) == [
        f"functions.{long_name}: deployed as {'p' * 25}-dev-{long_name}, 70 characters: over "
        "Lambda's 64; shorten the function's or the project's name",
        f"functions.{long_name}.timeout_s: at most 29 for a function behind API Gateway (its "
        "integration timeout); bigger requests become jobs",
    ]
    (problem,) = _problems(tmp_path, "[project]\nname = 'my_project'\n")
    assert problem.startswith("project.name:")


@pytest.mark.parametrize("schedule", ["rate(1 minute)", "rate(2 hours)", "cron(0 7 ? * MON-FRI *)"])
def test_schedules_eventbridge_takes(tmp_path: Path, schedule: str) -> None:
    extra = f"[functions.digits]\nmodels = ['digits']\nwarmup = {{ schedule = '{schedule}' }}\n"
    assert load_declaration(_write(tmp_path, extra)).functions["digits"].warmup is not None


def test_a_cron_needs_one_question_mark(tmp_path: Path) -> None:
    extra = (
        "[functions.digits]\nmodels = ['digits']\nwarmup = { schedule = 'cron(0 7 * * MON *)' }\n"
    )
    assert _problems(tmp_path, extra) == [
        "functions.digits.warmup.schedule: one of day-of-month and day-of-week must be ? (and "
        'only one), as AWS requires: "cron(0 7 ? * MON-FRI *)"'
    ]
