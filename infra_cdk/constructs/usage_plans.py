"""A usage plan per declared plan: throttle (rate, burst), quota (limit per DAY, WEEK or
MONTH, offset), and per-route throttles; API Gateway enforces them per key, as the local
gateway does. Keys are not made here: `stratoserve keys create --target aws` makes one per
tenant and adds it to its plan, which it finds by name (<prefix>-<plan>)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import Tags
from aws_cdk import aws_apigateway as apigateway
from constructs import Construct

from functions.runtime.tenants import PROJECT_TAG
from infra_cdk.constructs import pascal_case

if TYPE_CHECKING:
    from infra_cdk.constructs.rest_api import RestApi
    from stratoserve.declaration import PlanSpec


class UsagePlans(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        prefix: str,
        plans: dict[str, PlanSpec],
        rest_api: RestApi,
    ) -> None:
        super().__init__(scope, construct_id)
        self.plans: dict[str, apigateway.UsagePlan] = {}
        for name, plan in plans.items():
            per_method = [
                apigateway.ThrottlingPerMethod(
                    method=method,
                    throttle=apigateway.ThrottleSettings(
                        rate_limit=throttle.rate, burst_limit=throttle.burst
                    ),
                )
                for route, throttle in sorted(plan.throttles.items())
                for method in rest_api.methods_of(route)
            ]
            quota = None
            if plan.quota is not None:
                quota = apigateway.QuotaSettings(
                    limit=plan.quota.limit,
                    period=apigateway.Period[plan.quota.period],
                    offset=plan.quota.offset,
                )
            plan_construct = apigateway.UsagePlan(
                self,
                pascal_case(name) + "Plan",
                name=f"{prefix}-{name}",
                description=plan.description or f"stratoserve plan {name}",
                throttle=apigateway.ThrottleSettings(rate_limit=plan.rate, burst_limit=plan.burst),
                quota=quota,
                api_stages=[
                    apigateway.UsagePlanPerApiStage(
                        api=rest_api.api,
                        stage=rest_api.api.deployment_stage,
                        throttle=per_method or None,
                    )
                ],
            )
            # Which project and stage the plan is for: `stratoserve keys` lists only its own.
            Tags.of(plan_construct).add(PROJECT_TAG, prefix)
            self.plans[name] = plan_construct
