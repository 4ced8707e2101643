"""Typed FastAPI dependencies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from functions.api.errors import ApiError
from functions.runtime.environment import ExecutionEnvironment, get_environment
from functions.runtime.observability import logger
from functions.runtime.tenants import Tenant


async def current_environment() -> ExecutionEnvironment:
    # async on purpose: FastAPI runs a sync dependency in a worker thread, and under
    # Mangum (a fresh event loop per invocation) that thread hop cost ~1 ms a request.
    return get_environment()


EnvironmentDep = Annotated[ExecutionEnvironment, Depends(current_environment)]


async def current_tenant(request: Request, environment: EnvironmentDep) -> Tenant:
    """The caller's tenant, from the API key API Gateway checked. An event without a key id,
    or with one the tenant registry does not hold (a direct invocation, or a misconfigured
    gateway), gets API Gateway's own answer to a missing key: 403 Forbidden. Never a
    tenant without a plan."""
    event = request.scope.get("aws.event") or {}
    identity = (event.get("requestContext") or {}).get("identity") or {}
    key_id = identity.get("apiKeyId")
    if not key_id or not isinstance(key_id, str):
        raise ApiError(403, "Forbidden")
    tenant = environment.tenants.lookup(key_id)
    plans = environment.declaration.plans
    if tenant is None or (plans and tenant.plan not in plans):
        # A key whose plan is no longer declared would otherwise run without limits.
        raise ApiError(403, "Forbidden")
    logger.append_keys(tenant=tenant.name, tenant_id=tenant.id, plan=tenant.plan)
    return tenant


TenantDep = Annotated[Tenant, Depends(current_tenant)]
