"""A usage plan per declared plan, with the same limits the local gateway enforces, named
so that `stratoserve keys create --target aws` finds them."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stratoserve.declaration import Declaration
    from tests.integration.infra_cdk.conftest import Synth


def test_each_plan_has_its_limits(prod: Synth, declaration: Declaration) -> None:
    plans = {
        plan["Properties"]["UsagePlanName"]: plan["Properties"]
        for plan in prod.resources("AWS::ApiGateway::UsagePlan").values()
    }
    assert set(plans) == {f"stratoserve-{name}" for name in declaration.plans}
    for name, spec in declaration.plans.items():
        plan = plans[f"stratoserve-{name}"]
        assert plan["Throttle"] == {"RateLimit": spec.rate, "BurstLimit": spec.burst}
        assert spec.quota is not None
        assert plan["Quota"] == {
            "Limit": spec.quota.limit,
            "Period": spec.quota.period,
            "Offset": spec.quota.offset,
        }
        (stage,) = plan["ApiStages"]
        expected = {
            f"{route}/POST": {"RateLimit": throttle.rate, "BurstLimit": throttle.burst}
            for route, throttle in spec.throttles.items()
        }
        assert stage["Throttle"] == expected


def test_the_dev_stage_names_its_plans_apart(dev: Synth) -> None:
    names = {
        plan["Properties"]["UsagePlanName"]
        for plan in dev.resources("AWS::ApiGateway::UsagePlan").values()
    }
    assert names == {"stratoserve-dev-free", "stratoserve-dev-pro"}
