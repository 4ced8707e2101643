"""Typed FastAPI dependencies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from functions.api.errors import ApiError
from functions.runtime.environment import ExecutionEnvironment, get_environment
from functions.runtime.observability import logger
from functions.runtime.tenants import Tenant, TenantLookupError


async def current_environment() -> ExecutionEnvironment:
    # async on purpose: FastAPI runs a sync dependency in a worker thread, and under
    # Mangum (a fresh event loop per invocation) that thread hop cost ~1 ms a request.
    return get_environment()


EnvironmentDep = Annotated[ExecutionEnvironment, Depends(current_environment)]


async def current_tenant(request: Request, environment: EnvironmentDep) -> Tenant | None:
    """The caller's tenant, from the API key API Gateway checked; None without a key
    (only a direct invocation, never a call through API Gateway, has none)."""
    event = request.scope.get("aws.event") or {}
    identity = (event.get("requestContext") or {}).get("identity") or {}
    key_id = identity.get("apiKeyId")
    if not key_id:
        return None
    try:
        tenant = environment.tenants.lookup(key_id)
    except TenantLookupError as error:
        logger.error("tenant lookup failed", extra={"error": str(error)})
        raise ApiError(503, "could not identify the caller's tenant; try again") from None
    if tenant is None and environment.declaration.plans:
        # A key stratoserve did not issue belongs to no usage plan: API Gateway refuses
        # those, so only a misconfigured gateway lets one through. Refuse it here too.
        raise ApiError(403, "Forbidden")
    if tenant is not None:
        logger.append_keys(tenant=tenant.name, plan=tenant.plan)
    return tenant


TenantDep = Annotated[Tenant | None, Depends(current_tenant)]
