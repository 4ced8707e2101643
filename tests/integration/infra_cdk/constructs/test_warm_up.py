"""Warm-up rules: the declared schedule, the runtime's own event (with the concurrency the
function fans out to) on the `live` alias, and leave to invoke that alias, nothing more."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from functions.runtime.warmup import warmup_event

if TYPE_CHECKING:
    from stratoserve.declaration import Declaration
    from tests.integration.infra_cdk.conftest import Synth


def test_a_rule_per_declared_warmup(prod: Synth, declaration: Declaration) -> None:
    declared = {name: spec.warmup for name, spec in declaration.functions.items() if spec.warmup}
    rules = [
        rule
        for rule in prod.resources("AWS::Events::Rule").values()
        if "warmup" in json.loads(rule["Properties"]["Targets"][0]["Input"])
    ]
    assert len(rules) == len(declared) == 1
    warmup = declared["api"]
    assert warmup is not None
    (rule,) = rules
    properties = rule["Properties"]
    assert properties["ScheduleExpression"] == warmup.schedule
    (target,) = properties["Targets"]
    assert json.loads(target["Input"]) == warmup_event(warmup.concurrency)
    assert target["RetryPolicy"]["MaximumRetryAttempts"] == 0
    alias = prod.template_json["Resources"][target["Arn"]["Ref"]]
    assert alias["Type"] == "AWS::Lambda::Alias"
    assert alias["Properties"]["Name"] == "live"


def test_the_warmed_function_may_invoke_its_own_alias_only(prod: Synth) -> None:
    statements = [
        statement
        for policy in prod.resources("AWS::IAM::Policy").values()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if "lambda:InvokeFunction" in statement["Action"]
    ]
    (statement,) = statements
    arn = "".join(
        part if isinstance(part, str) else "{}" for part in statement["Resource"]["Fn::Join"][1]
    )
    assert arn.endswith(":function:stratoserve-api:live")
