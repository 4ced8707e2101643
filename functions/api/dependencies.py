"""Typed FastAPI dependencies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from functions.runtime.environment import ExecutionEnvironment, get_environment


async def current_environment() -> ExecutionEnvironment:
    # async on purpose: FastAPI runs a sync dependency in a worker thread, and under
    # Mangum (a fresh event loop per invocation) that thread hop cost ~1 ms a request.
    return get_environment()


EnvironmentDep = Annotated[ExecutionEnvironment, Depends(current_environment)]
