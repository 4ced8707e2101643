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


# -- concurrency: reservations within the account, the jobs queue within the worker ------


def test_every_function_reserves_a_share_that_leaves_the_unreserved_pool() -> None:
    declaration = load_declaration(DECLARATION_FILE)
    reserved = {
        name: spec.reserved_concurrency or 0 for name, spec in declaration.functions.items()
    }
    assert reserved == {"api": 100, "digits": 100, "embed": 100, "worker": 100}
    # Two stages (dev and prod) in one account of 1,000 leave AWS's 100 unreserved.
    assert 2 * sum(reserved.values()) <= declaration.project.account_concurrency - 100
    # The jobs queue's mapping leaves the callbacks queue's 2 of the worker's 100.
    assert declaration.jobs_max_concurrency() == 98
    assert declaration.deploy.health_throttle.rate == 10


def test_the_default_share_shrinks_with_the_account_and_the_functions(tmp_path: Path) -> None:
    declaration = load_declaration(_write(tmp_path, "[project]\naccount_concurrency = 400\n"))
    # (400 - 100) // (2 stages x 3 functions: digits, api, worker)
    assert {spec.reserved_concurrency for spec in declaration.functions.values()} == {50}
    declared = "[functions.digits]\nmodels = ['digits']\nreserved_concurrency = 7\n"
    assert (
        load_declaration(_write(tmp_path, declared)).functions["digits"].reserved_concurrency == 7
    )


def test_an_account_of_ten_reserves_nothing_and_runs_two_workers(tmp_path: Path) -> None:
    declaration = load_declaration(_write(tmp_path, "[project]\naccount_concurrency = 10\n"))
    assert {spec.reserved_concurrency for spec in declaration.functions.values()} == {None}
    assert declaration.jobs_max_concurrency() == 2


def test_reservations_over_what_the_account_can_give_are_refused(tmp_path: Path) -> None:
    extra = """
    [project]
    account_concurrency = 300
    [functions.digits]
    models = ["digits"]
    reserved_concurrency = 150
    """
    assert _problems(tmp_path, extra) == [
        "project.account_concurrency: the functions reserve 216 executions (api 33, digits "
        "150, worker 33), over the 200 an account of 300 can reserve (AWS keeps 100 "
        "unreserved); lower functions.<name>.reserved_concurrency, or raise the account's "
        "quota and project.account_concurrency with it"
    ]


def test_the_jobs_queue_runs_no_more_workers_than_the_worker_reserves(tmp_path: Path) -> None:
    refused = "jobs.max_concurrency: must be at most functions.worker.reserved_concurrency (5) "
    refused += "less the callbacks queue's 2, or the queues' deliveries are throttled"
    for maximum in (6, 4):  # 4 + the callbacks queue's 2 is over 5 too
        extra = (
            f"[functions.worker]\nreserved_concurrency = 5\n[jobs]\nmax_concurrency = {maximum}\n"
        )
        assert _problems(tmp_path, extra) == [refused]
    accepted = "[functions.worker]\nreserved_concurrency = 5\n[jobs]\nmax_concurrency = 3\n"
    assert load_declaration(_write(tmp_path, accepted)).jobs_max_concurrency() == 3
    assert _problems(tmp_path, "[functions.worker]\nreserved_concurrency = 3\n") == [
        "functions.worker.reserved_concurrency: must be at least 4, what its event sources "
        "run at the least (2 for the jobs queue, 2 for the callbacks queue)"
    ]
    declared = load_declaration(_write(tmp_path, "[jobs]\nmax_concurrency = 2\n"))
    assert declared.jobs_max_concurrency() == 2


def test_a_default_reservation_makes_room_for_provisioned_and_warm_environments(
    tmp_path: Path,
) -> None:
    extra = """
    [project]
    account_concurrency = 200
    [functions.digits]
    models = ["digits"]
    provisioned_concurrency = 20
    """
    # The share is (200 - 100) // 6 = 16: digits needs 20.
    declaration = load_declaration(_write(tmp_path, extra))
    assert declaration.functions["digits"].reserved_concurrency == 20
    assert declaration.functions["api"].reserved_concurrency == 16


def test_max_text_chars_is_for_text_models(tmp_path: Path) -> None:
    assert _problems(tmp_path, "[models.digits]\nmax_text_chars = 10\n") != []
