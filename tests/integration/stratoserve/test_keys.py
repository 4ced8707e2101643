"""Tenants' keys through API Gateway's own API, against a real moto server."""

from __future__ import annotations

import stat
from typing import TYPE_CHECKING

import pytest

from stratoserve.keys import IssuedKey, KeysError, KeyService, LocalKeyStore
from stratoserve.local.aws import LocalAws, client
from stratoserve.local.keys import GatewayKeys

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path
    from typing import Any

    from stratoserve.declaration import Declaration


@pytest.fixture
def apigateway() -> Iterator[Any]:
    aws = LocalAws()
    url = aws.start()
    try:
        yield client("apigateway", url)
    finally:
        aws.reset()  # moto's state lives in the process, across server instances
        aws.stop()


@pytest.fixture
def service(apigateway: Any, declaration: Declaration) -> KeyService:
    keys = KeyService(apigateway, project="test")
    keys.ensure_plans(declaration)
    return keys


def test_declared_plans_become_usage_plans_with_their_limits(
    apigateway: Any, service: KeyService, declaration: Declaration
) -> None:
    plans = {plan["name"]: plan for plan in apigateway.get_usage_plans()["items"]}

    assert set(plans) == {"test-free", "test-pro"}
    assert plans["test-free"]["throttle"] == {"rateLimit": 5.0, "burstLimit": 10}
    assert plans["test-free"]["quota"] == {"limit": 1000, "offset": 0, "period": "DAY"}
    assert service.ensure_plans(declaration).keys() == {"free", "pro"}, "idempotent"
    assert len(apigateway.get_usage_plans()["items"]) == 2


def test_a_key_is_created_once_listed_without_its_value_and_revoked(
    apigateway: Any, service: KeyService
) -> None:
    issued = service.create("acme", "free")

    assert len(issued.key) >= 20
    (listed,) = service.keys()
    assert (listed.tenant, listed.plan, listed.key_id, listed.enabled) == (
        "acme",
        "free",
        issued.key_id,
        True,
    )
    assert issued.key not in repr(listed)
    plan_keys = apigateway.get_usage_plans(keyId=issued.key_id)["items"]
    assert [plan["name"] for plan in plan_keys] == ["test-free"]

    assert service.revoke("acme") == [issued.key_id]
    (revoked,) = service.keys()
    assert not revoked.enabled


def test_mistakes_are_refused_with_what_to_do(service: KeyService) -> None:
    service.create("acme", "free")

    with pytest.raises(KeysError, match="already has an active key; revoke it first"):
        service.create("acme", "pro")
    with pytest.raises(KeysError, match=r"unknown plan gold \(usage plans: free, pro\)"):
        service.create("globex", "gold")
    with pytest.raises(KeysError, match="tenant globex has no active key"):
        service.revoke("globex")


def test_the_gateway_sees_a_revocation_on_the_next_request(
    apigateway: Any, service: KeyService, tmp_path: Path
) -> None:
    store = LocalKeyStore(tmp_path)
    issued = service.create("acme", "pro")
    store.add(issued)
    keys = GatewayKeys(apigateway, store)

    found = keys.lookup(issued.key)
    assert found is not None
    assert (found.tenant, found.plan, found.key_id) == ("acme", "pro", issued.key_id)

    service.revoke("acme")
    store.disable("acme")

    assert keys.lookup(issued.key) is None
    assert keys.lookup("not-a-key-at-all-but-long") is None


def test_the_local_store_keeps_values_private(tmp_path: Path) -> None:
    store = LocalKeyStore(tmp_path)
    store.add(IssuedKey("acme", "free", "id1", "v" * 30))
    store.add(IssuedKey("globex", "pro", "id2", "w" * 30))
    store.disable("acme")

    assert [(key.tenant, key.enabled) for key in store.load()] == [
        ("acme", False),
        ("globex", True),
    ]
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
