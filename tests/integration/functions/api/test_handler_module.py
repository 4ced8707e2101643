"""The real handler module in a real local execution environment: init loads the
function's models, warm-ups never reach FastAPI, SAM's sample events get real answers."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from stratoserve.declaration import function_environment as variables
from stratoserve.local.aws import LocalAws, client, function_environment
from stratoserve.local.environments import FunctionPool
from stratoserve.local.stack import function_configs
from stratoserve.tenants import TenantRegistry, create_registry_table
from tests.conftest import DECLARATION_FILE, ROOT, TEST_KEY_ID, sample_event
from tests.integration.stratoserve.moto import reset_moto

if TYPE_CHECKING:
    from pathlib import Path

    from stratoserve.declaration import Declaration


TENANTS_TABLE = "test-tenants"


def _invoke_all(declaration: Declaration, function: str, events: list[dict[str, Any]]) -> list[Any]:
    """The events through one environment of `function`, whose tenant registry (in a moto
    server) knows the key TEST_KEY_ID."""
    aws = LocalAws()
    url = aws.start()
    dynamodb = client("dynamodb", url)
    create_registry_table(dynamodb, TENANTS_TABLE)
    TenantRegistry(dynamodb, TENANTS_TABLE).register(
        TEST_KEY_ID, "acme", "pro", tenant_id="t-0123456789abcdef"
    )
    configs = function_configs(
        declaration,
        DECLARATION_FILE,
        function_environment(url),
        {variables.TENANTS_TABLE: TENANTS_TABLE},
    )

    async def scenario() -> list[Any]:
        pool = FunctionPool(configs[function], cwd=ROOT)
        try:
            return [(await pool.invoke(event)).result for event in events]
        finally:
            await pool.close()

    try:
        return asyncio.run(scenario())
    finally:
        reset_moto(url)
        aws.stop()


def _keyed(event: dict[str, Any]) -> dict[str, Any]:
    """SAM's sample, with the key id API Gateway adds (the sample has none)."""
    event["requestContext"]["identity"]["apiKeyId"] = TEST_KEY_ID
    return event


def test_warmups_load_models_and_answer_without_fastapi(
    declaration: Declaration, built_models: Path
) -> None:
    scheduled = sample_event("eventbridge-scheduled.json")

    custom, eventbridge, request = _invoke_all(
        declaration,
        "digits",
        [
            {"warmup": {"source": "schedule"}},
            scheduled,
            _keyed(sample_event("apigw-rest-proxy.json")),
        ],
    )

    assert custom["warmup"] is True
    assert custom["cold_start"] is True
    assert custom["models"] == ["digits:1"]
    assert custom["loaded_now"] == [], "init preloaded the model: the warm-up loads nothing"
    assert eventbridge["cold_start"] is False
    assert eventbridge["loaded_now"] == []
    # Not a proxy response: the warm-up never went through Mangum or FastAPI.
    assert "statusCode" not in custom and "statusCode" not in eventbridge
    assert request["statusCode"] == 200


def test_the_api_function_loads_no_model(declaration: Declaration, built_models: Path) -> None:
    (answer,) = _invoke_all(declaration, "api", [{"warmup": True}])

    assert answer["models"] == []
    assert answer["function"] == "api"
