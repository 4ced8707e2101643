from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
from mangum import Mangum

from functions.api.app import create_app
from functions.api.dependencies import current_environment
from functions.runtime.environment import ExecutionEnvironment
from tests.conftest import DECLARATION_FILE, tenant_directory

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from stratoserve.declaration import Declaration


class Context:
    function_name = "test"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:test"
    aws_request_id = "test-request"

    def get_remaining_time_in_millis(self) -> int:
        return 10_000


@pytest.fixture(scope="session")
def environments(declaration: Declaration, built_models: Path) -> dict[str, ExecutionEnvironment]:
    """One execution environment per declared function, models preloaded (built once),
    whose tenant registry knows rest_event's key (tests.conftest.TEST_TENANT)."""
    result = {}
    for name in declaration.functions:
        environment = ExecutionEnvironment(declaration, DECLARATION_FILE, name)
        environment.tenants = tenant_directory()
        environment.cache.preload(environment.served_keys())
        result[name] = environment
    return result


@pytest.fixture(scope="session")
def invoke(environments: dict[str, ExecutionEnvironment]) -> Callable[..., Any]:
    """Invoke function `name` the way Lambda does: a REST proxy event through Mangum."""

    def provider(environment: ExecutionEnvironment) -> Callable[[], Any]:
        async def provide() -> ExecutionEnvironment:
            return environment

        return provide

    handlers = {}
    for name, environment in environments.items():
        app = create_app(environment.declaration)
        app.dependency_overrides[current_environment] = provider(environment)
        handlers[name] = Mangum(app, lifespan="off")

    def call(name: str, event: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        result = handlers[name](event, Context())
        body = json.loads(result["body"]) if result["body"] else None
        return result["statusCode"], result["headers"], body

    return call
