"""The function knows its caller: API Gateway's key id -> tenant (name, immutable id, plan,
callback secret version), read from the tenant registry (moto here) with one GetItem and
cached; a plan decides which models the caller may use; an event without a registered key
id is refused, as API Gateway refuses a request without a key."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from functions.runtime.tenants import Tenant, TenantDirectory
from stratoserve.keys import KeyService
from stratoserve.local.aws import LocalAws, client
from stratoserve.tenants import TenantRegistry, create_registry_table
from tests.conftest import RegistryClient, rest_event, tenant_directory
from tests.integration.stratoserve.moto import reset_moto

if TYPE_CHECKING:
    from collections.abc import Iterator

    from functions.runtime.environment import ExecutionEnvironment
    from stratoserve.declaration import Declaration

TABLE = "test-tenants"
DIGITS = {"inputs": [[0] * 64]}


@pytest.fixture
def local_aws(declaration: Declaration) -> Iterator[tuple[str, dict[str, str]]]:
    """A moto server with the declared plans, the registry, and a free and a pro tenant:
    url, key ids."""
    aws = LocalAws()
    url = aws.start()
    dynamodb = client("dynamodb", url)
    create_registry_table(dynamodb, TABLE)
    service = KeyService(
        client("apigateway", url), project="test", registry=TenantRegistry(dynamodb, TABLE)
    )
    service.ensure_plans(declaration)
    ids = {plan: service.create(f"{plan}-tenant", plan).key_id for plan in ("free", "pro")}
    try:
        yield url, ids
    finally:
        reset_moto(url)
        aws.stop()


@pytest.fixture
def registered(
    environments: dict[str, ExecutionEnvironment],
    local_aws: tuple[str, dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, str]:
    """The environments read the moto registry (for this test only); the key ids."""
    url, ids = local_aws
    for environment in environments.values():
        monkeypatch.setattr(
            environment, "tenants", TenantDirectory(TABLE, lambda: client("dynamodb", url))
        )
    return ids


def _keyed(event: dict[str, Any], key_id: str) -> dict[str, Any]:
    event["requestContext"]["identity"]["apiKeyId"] = key_id
    return event


def test_a_key_id_resolves_to_its_tenant_with_one_cached_get_item(
    local_aws: tuple[str, dict[str, str]],
) -> None:
    url, ids = local_aws
    calls = []

    def factory() -> Any:
        calls.append(1)
        return client("dynamodb", url)

    directory = TenantDirectory(TABLE, factory)

    free = directory.lookup(ids["free"])
    assert free is not None
    assert (free.name, free.plan, free.secret_version) == ("free-tenant", "free", 1)
    assert free.id.startswith("t-")
    assert directory.lookup(ids["free"]) == free
    assert directory.lookup("nosuchkey1") is None
    assert len(calls) == 1, "one client per environment"


def test_lookups_are_cached() -> None:
    registry = RegistryClient({"k1": Tenant("acme", "pro", "t-1")})
    directory = TenantDirectory("tenants", lambda: registry)

    for _ in range(3):
        assert directory.lookup("k1") == Tenant("acme", "pro", "t-1")
    assert registry.calls == 1


def test_a_plan_without_the_model_gets_a_403_naming_both(
    invoke: Any, registered: dict[str, str]
) -> None:
    refused = invoke(
        "embed",
        _keyed(rest_event("POST", "/v2/predict/embed", {"inputs": ["x"]}), registered["free"]),
    )
    allowed = invoke(
        "embed",
        _keyed(rest_event("POST", "/v2/predict/embed", {"inputs": ["x"]}), registered["pro"]),
    )
    digits = invoke(
        "digits", _keyed(rest_event("POST", "/v2/predict/digits", DIGITS), registered["free"])
    )

    assert refused[0] == 403
    assert refused[2] == {"message": "plan free does not include model embed"}
    assert allowed[0] == 200
    assert digits[0] == 200
    assert float(digits[1]["server-timing"].removeprefix("model;dur=")) >= 0


def test_models_lists_only_what_the_plan_allows(invoke: Any, registered: dict[str, str]) -> None:
    _, _, free = invoke("api", _keyed(rest_event("GET", "/v2/models"), registered["free"]))
    _, _, pro = invoke("api", _keyed(rest_event("GET", "/v2/models"), registered["pro"]))

    assert [model["name"] for model in free["models"]] == ["digits"]
    assert [model["name"] for model in pro["models"]] == ["digits", "embed"]


def test_a_failed_lookup_is_a_503_and_an_unregistered_key_a_403(
    invoke: Any,
    environments: dict[str, ExecutionEnvironment],
    local_aws: tuple[str, dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, _ = local_aws

    def unreachable() -> Any:
        return client("dynamodb", "http://127.0.0.1:9")  # nothing listens on port 9

    monkeypatch.setattr(environments["digits"], "tenants", TenantDirectory(TABLE, unreachable))
    event = _keyed(rest_event("POST", "/v2/predict/digits", DIGITS), "abcdefghij")
    status, _, body = invoke("digits", event)
    assert status == 503
    assert body == {"message": "could not identify the caller's tenant; try again"}

    # A key API Gateway holds, that `stratoserve keys` did not register.
    foreign = client("apigateway", url).create_api_key(name="not-ours", enabled=True)["id"]
    monkeypatch.setattr(
        environments["digits"], "tenants", TenantDirectory(TABLE, lambda: client("dynamodb", url))
    )
    event = _keyed(rest_event("POST", "/v2/predict/digits", DIGITS), foreign)
    status, _, body = invoke("digits", event)
    assert status == 403
    assert body == {"message": "Forbidden"}


@pytest.mark.parametrize(
    ("function", "method", "path", "body"),
    [
        ("digits", "POST", "/v2/predict/digits", DIGITS),
        ("embed", "POST", "/v1/predict/embed", {"inputs": ["x"] * 600}),
        ("api", "GET", "/v2/models", None),
        ("api", "POST", "/v2/jobs", {"model": "digits", "inputs": [[0] * 64]}),
        ("api", "GET", "/v2/jobs/6f1c1f0e-2c1a-4b8e-9a57-8c1c4a1d2e3f", None),
        ("api", "DELETE", "/v2/jobs/6f1c1f0e-2c1a-4b8e-9a57-8c1c4a1d2e3f", None),
    ],
)
def test_an_event_without_a_key_id_is_refused_like_api_gateway_refuses_it(
    invoke: Any, function: str, method: str, path: str, body: Any
) -> None:
    """A direct invocation (no API Gateway in front) never runs as a tenant without a plan:
    no model, no GPU routing, no job escapes the plans."""
    status, _, answer = invoke(function, rest_event(method, path, body, key_id=None))

    assert (status, answer) == (403, {"message": "Forbidden"})


def test_health_needs_no_key(invoke: Any) -> None:
    status, _, _ = invoke("api", rest_event("GET", "/health", key_id=None))

    assert status == 200


def test_a_key_whose_plan_is_no_longer_declared_is_refused(
    invoke: Any, environments: dict[str, ExecutionEnvironment], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        environments["digits"],
        "tenants",
        tenant_directory({"oldplankey": Tenant("acme", "gold", "t-1")}),
    )
    event = rest_event("POST", "/v2/predict/digits", DIGITS, key_id="oldplankey")

    assert invoke("digits", event)[:3:2] == (403, {"message": "Forbidden"})
