"""The real handler module in a real local execution environment: init loads the
function's models, warm-ups never reach FastAPI, SAM's sample events get real answers."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from stratoserve.local.environments import FunctionPool
from stratoserve.local.stack import function_configs
from tests.conftest import DECLARATION_FILE, ROOT, sample_event

if TYPE_CHECKING:
    from pathlib import Path

    from stratoserve.declaration import Declaration


def _invoke_all(declaration: Declaration, function: str, events: list[dict[str, Any]]) -> list[Any]:
    async def scenario() -> list[Any]:
        pool = FunctionPool(function_configs(declaration, DECLARATION_FILE)[function], cwd=ROOT)
        try:
            return [(await pool.invoke(event)).result for event in events]
        finally:
            await pool.close()

    return asyncio.run(scenario())


def test_warmups_load_models_and_answer_without_fastapi(
    declaration: Declaration, built_models: Path
) -> None:
    scheduled = sample_event("eventbridge-scheduled.json")

    custom, eventbridge, request = _invoke_all(
        declaration,
        "digits",
        [{"warmup": {"source": "schedule"}}, scheduled, sample_event("apigw-rest-proxy.json")],
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
