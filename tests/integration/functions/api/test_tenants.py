"""The function knows its caller: API Gateway's key id -> tenant and plan, looked up in
API Gateway (moto here) and cached; a plan decides which models the caller may use."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from functions.runtime.tenants import Tenant, TenantDirectory
from stratoserve.keys import KeyService
from stratoserve.local.aws import LocalAws, client
from tests.conftest import rest_event
from tests.integration.stratoserve.moto import reset_moto

if TYPE_CHECKING:
    from collections.abc import Iterator

    from functions.runtime.environment import ExecutionEnvironment
    from stratoserve.declaration import Declaration


@pytest.fixture
def local_aws(declaration: Declaration) -> Iterator[tuple[str, dict[str, str]]]:
    """A moto server with the declared plans and a free and a pro tenant: url, key ids."""
    aws = LocalAws()
    url = aws.start()
    service = KeyService(client("apigateway", url), project="test")
    service.ensure_plans(declaration)
    ids = {plan: service.create(f"{plan}-tenant", plan).key_id for plan in ("free", "pro")}
    try:
        yield url, ids
    finally:
        reset_moto(url)
        aws.stop()


def _keyed(event: dict[str, Any], key_id: str) -> dict[str, Any]:
    event["requestContext"]["identity"]["apiKeyId"] = key_id
    return event


def test_a_key_id_resolves_to_its_tenant_and_plan_and_is_cached(
    local_aws: tuple[str, dict[str, str]],
) -> None:
    url, ids = local_aws
    calls = []

    def factory() -> Any:
        calls.append(1)
        return client("apigateway", url)

    directory = TenantDirectory(factory)

    assert directory.lookup(ids["free"]) == Tenant("free-tenant", "free")
    assert directory.lookup(ids["free"]) == Tenant("free-tenant", "free")
    assert directory.lookup("nosuchkey1") is None
    assert len(calls) == 1, "one client per environment"


def test_a_plan_without_the_model_gets_a_403_naming_both(
    invoke: Any,
    environments: dict[str, ExecutionEnvironment],
    local_aws: tuple[str, dict[str, str]],
) -> None:
    url, ids = local_aws
    for environment in environments.values():
        environment.tenants = TenantDirectory(lambda: client("apigateway", url))

    refused = invoke(
        "embed", _keyed(rest_event("POST", "/v2/predict/embed", {"inputs": ["x"]}), ids["free"])
    )
    allowed = invoke(
        "embed", _keyed(rest_event("POST", "/v2/predict/embed", {"inputs": ["x"]}), ids["pro"])
    )
    digits = invoke(
        "digits",
        _keyed(rest_event("POST", "/v2/predict/digits", {"inputs": [[0] * 64]}), ids["free"]),
    )

    assert refused[0] == 403
    assert refused[2] == {"message": "plan free does not include model embed"}
    assert allowed[0] == 200
    assert digits[0] == 200
    assert float(digits[1]["server-timing"].removeprefix("model;dur=")) >= 0


def test_models_lists_only_what_the_plan_allows(
    invoke: Any,
    environments: dict[str, ExecutionEnvironment],
    local_aws: tuple[str, dict[str, str]],
) -> None:
    url, ids = local_aws
    environments["api"].tenants = TenantDirectory(lambda: client("apigateway", url))

    _, _, free = invoke("api", _keyed(rest_event("GET", "/v2/models"), ids["free"]))
    _, _, pro = invoke("api", _keyed(rest_event("GET", "/v2/models"), ids["pro"]))

    assert [model["name"] for model in free["models"]] == ["digits"]
    assert [model["name"] for model in pro["models"]] == ["digits", "embed"]


def test_a_failed_lookup_is_a_503_and_a_foreign_key_a_403(
    invoke: Any,
    environments: dict[str, ExecutionEnvironment],
    local_aws: tuple[str, dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, _ = local_aws

    def unreachable() -> Any:
        return client("apigateway", "http://127.0.0.1:9")  # nothing listens on port 9

    monkeypatch.setattr(environments["digits"], "tenants", TenantDirectory(unreachable))
    event = _keyed(rest_event("POST", "/v2/predict/digits", {"inputs": [[0] * 64]}), "abcdefghij")
    status, _, body = invoke("digits", event)
    assert status == 503
    assert body == {"message": "could not identify the caller's tenant; try again"}

    foreign = client("apigateway", url).create_api_key(name="not-ours", enabled=True)["id"]
    monkeypatch.setattr(
        environments["digits"], "tenants", TenantDirectory(lambda: client("apigateway", url))
    )
    event = _keyed(rest_event("POST", "/v2/predict/digits", {"inputs": [[0] * 64]}), foreign)
    status, _, body = invoke("digits", event)
    assert status == 403
    assert body == {"message": "Forbidden"}
