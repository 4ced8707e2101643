"""The stuck-jobs sweep: a rule on the declared schedule sends the runtime's own sweep
event to the worker's `live` alias, and the worker alone may scan the job table for it."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from functions.worker.sweep import SWEEP_EVENT

if TYPE_CHECKING:
    from stratoserve.declaration import Declaration
    from tests.integration.infra_cdk.conftest import Synth


def test_the_worker_sweeps_the_jobs_on_the_declared_schedule(
    prod: Synth, declaration: Declaration
) -> None:
    (rule,) = [
        rule
        for rule in prod.resources("AWS::Events::Rule").values()
        if json.loads(rule["Properties"]["Targets"][0]["Input"]) == SWEEP_EVENT
    ]
    properties = rule["Properties"]
    assert properties["ScheduleExpression"] == declaration.jobs.sweep_schedule
    (target,) = properties["Targets"]
    assert target["RetryPolicy"]["MaximumRetryAttempts"] == 0
    alias = prod.template_json["Resources"][target["Arn"]["Ref"]]
    assert alias["Type"] == "AWS::Lambda::Alias"
    assert alias["Properties"]["Name"] == "live"
    function = prod.template_json["Resources"][alias["Properties"]["FunctionName"]["Ref"]]
    assert function["Properties"]["FunctionName"] == "stratoserve-worker"


def test_only_the_worker_may_scan_and_only_the_job_table(prod: Synth) -> None:
    scans = [
        (name, statement["Resource"])
        for name, policy in prod.resources("AWS::IAM::Policy").items()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if "dynamodb:Scan" in json.dumps(statement["Action"])
    ]
    (name, resource), *others = scans
    assert others == []
    assert name.startswith("WorkerFunction")
    table = prod.template_json["Resources"][resource["Fn::GetAtt"][0]]
    assert table["Properties"]["KeySchema"] == [
        {"AttributeName": "tenant", "KeyType": "HASH"},
        {"AttributeName": "job_id", "KeyType": "RANGE"},
    ]
