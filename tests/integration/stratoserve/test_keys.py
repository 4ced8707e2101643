"""Tenants' keys through API Gateway's own API and the tenant registry, against a real moto
server."""

from __future__ import annotations

import stat
from typing import TYPE_CHECKING

import pytest

from functions.runtime.tenants import PLAN_TAG, PROJECT_TAG, TENANT_TAG, Tenant, TenantDirectory
from stratoserve.keys import IssuedKey, KeysError, KeyService, LocalKeyStore
from stratoserve.local.aws import LocalAws, client
from stratoserve.local.keys import GatewayKeys
from stratoserve.tenants import TenantRegistry, create_registry_table
from tests.integration.stratoserve.moto import reset_moto

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
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
        reset_moto(url)  # moto keeps its state per process, across server instances
        aws.stop()


def _registry(apigateway: Any, table: str) -> TenantRegistry:
    dynamodb = client("dynamodb", apigateway.meta.endpoint_url)
    create_registry_table(dynamodb, table)
    return TenantRegistry(dynamodb, table)


@pytest.fixture
def registry(apigateway: Any) -> TenantRegistry:
    return _registry(apigateway, "test-tenants")


@pytest.fixture
def service(apigateway: Any, registry: TenantRegistry, declaration: Declaration) -> KeyService:
    keys = KeyService(apigateway, project="test", registry=registry)
    keys.ensure_plans(declaration)
    return keys


@pytest.fixture
def directory(apigateway: Any, registry: TenantRegistry) -> Callable[[], TenantDirectory]:
    """A function's view of the registry (a fresh one each call: no cached answers)."""
    url = apigateway.meta.endpoint_url
    return lambda: TenantDirectory(registry.table, lambda: client("dynamodb", url))


def test_a_key_is_registered_with_what_the_functions_read(
    service: KeyService, directory: Callable[[], TenantDirectory]
) -> None:
    issued = service.create("acme", "pro")

    assert issued.tenant_id.startswith("t-")
    assert directory().lookup(issued.key_id) == Tenant("acme", "pro", issued.tenant_id, 1)
    (listed,) = service.keys()
    assert listed.tenant_id == issued.tenant_id

    service.revoke("acme")
    assert directory().lookup(issued.key_id) is None, "a revoked key is disabled"


def test_a_re_issued_name_gets_a_new_tenant_id_and_a_rotated_key_keeps_it(
    service: KeyService,
) -> None:
    first = service.create("acme", "pro")
    rotated, old = service.rotate("acme")

    assert old == [first.key_id]
    assert rotated.tenant_id == first.tenant_id, "same tenant: its jobs and secret stay"
    listed = service.keys()
    assert [key.enabled for key in listed] == [False, True]

    service.revoke("acme")
    re_issued = service.create("acme", "pro")

    assert re_issued.tenant_id != first.tenant_id, "a new tenant behind the old name"
    assert service.tenant_ids("acme") == [first.tenant_id, re_issued.tenant_id, "acme"]


def test_a_tenant_s_callback_secret_version_is_bumped_in_the_registry(
    service: KeyService, directory: Callable[[], TenantDirectory]
) -> None:
    issued = service.create("acme", "pro")

    assert service.rotate_secret("acme").secret_version == 2
    assert service.rotate_secret("acme").secret_version == 3
    tenant = directory().lookup(issued.key_id)
    assert tenant is not None
    assert tenant.secret_version == 3
    rotated, _ = service.rotate("acme")
    assert rotated.secret_version == 3, "a new key does not reset the secret"
    with pytest.raises(KeysError, match="tenant globex has no active key"):
        service.rotate_secret("globex")


def test_keys_from_before_the_registry_are_migrated_under_their_name(
    apigateway: Any, service: KeyService, directory: Callable[[], TenantDirectory]
) -> None:
    """A key with API Gateway's tags only is refused by the functions until `keys migrate`
    registers it; its tenant id is its name, under which its jobs and secret already are."""
    legacy = apigateway.create_api_key(
        name="acme",
        enabled=True,
        tags={TENANT_TAG: "acme", PLAN_TAG: "pro", PROJECT_TAG: "test"},
    )["id"]
    assert directory().lookup(legacy) is None
    (listed,) = service.keys()
    assert listed.tenant_id is None

    assert [key.key_id for key in service.migrate()] == [legacy]
    assert service.migrate() == [], "idempotent"
    assert directory().lookup(legacy) == Tenant("acme", "pro", "acme", 1)


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
    plan_keys = apigateway.get_usage_plans(keyId=issued.key_id)["items"]
    assert [plan["name"] for plan in plan_keys] == ["test-free"]

    assert service.revoke("acme") == [issued.key_id]
    (revoked,) = service.keys()
    assert not revoked.enabled


def test_mistakes_are_refused_with_what_to_do(service: KeyService) -> None:
    service.create("acme", "free")

    with pytest.raises(KeysError, match="already has an active key; revoke it first"):
        service.create("acme", "pro")
    with pytest.raises(KeysError, match=r"unknown plan 'gold' \(usage plans: free, pro\)"):
        service.create("globex", "gold")
    with pytest.raises(KeysError, match="tenant globex has no active key"):
        service.revoke("globex")
    with pytest.raises(KeysError, match=r"unknown plan '' \(usage plans: free, pro\)"):
        service.create("initech", "")


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
    store.add(IssuedKey("acme", "free", "id1", "v" * 30, "t-1"))
    store.add(IssuedKey("globex", "pro", "id2", "w" * 30, "t-2"))
    store.disable("acme")

    assert [(key.tenant, key.enabled) for key in store.load()] == [
        ("acme", False),
        ("globex", True),
    ]
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600


def test_usage_on_aws_sums_api_gateways_daily_counts(apigateway: Any, service: KeyService) -> None:
    # moto has no GetUsage: a botocore Stubber answers the calls, with the plans and keys
    # pages moto gave and GetUsage's reply as API Gateway documents it.
    from botocore.stub import Stubber

    issued = service.create("acme", "free")
    plan_id = {plan["name"]: plan["id"] for plan in apigateway.get_usage_plans()["items"]}[
        "test-free"
    ]
    keys_page = apigateway.get_api_keys(includeValues=False)
    plans_page = apigateway.get_usage_plans()
    stubber = Stubber(apigateway)
    stubber.add_response("get_usage_plans", plans_page)
    stubber.add_response("get_api_keys", keys_page)
    stubber.add_response(
        "get_usage",
        {"usagePlanId": plan_id, "items": {issued.key_id: [[12, 988], [30, 958]]}},
        {
            "usagePlanId": plan_id,
            "keyId": issued.key_id,
            "startDate": "2026-11-01",
            "endDate": "2026-11-02",
        },
    )
    import datetime as dt

    with stubber:
        usage = service.usage(dt.date(2026, 11, 1), dt.date(2026, 11, 2))

    assert usage == {"acme": {"requests": 42, "plan": "free", "quota_remaining": 958}}


def test_the_gateway_keeps_its_keys_when_the_local_api_gateway_is_gone(
    service: KeyService, tmp_path: Path
) -> None:
    aws = LocalAws()
    url = aws.start()
    store = LocalKeyStore(tmp_path)
    issued = service.create("acme", "pro")
    store.add(issued)
    keys = GatewayKeys(client("apigateway", url), store)
    assert keys.lookup(issued.key) is not None
    aws.stop()  # this gateway's view of moto is gone

    store.add(IssuedKey("globex", "pro", "id2", "w" * 30, "t-2"))  # keys.json changed: reload fails

    found = keys.lookup(issued.key)
    assert found is not None
    assert found.tenant == "acme"


def test_a_deployed_stage_sees_only_its_own_keys(
    apigateway: Any, service: KeyService, declaration: Declaration
) -> None:
    """dev and prod of one project in one account: plans and keys are account-wide, the
    prefix (test-dev-) and the project tag keep them apart."""
    dev = KeyService(
        apigateway, project="test-dev", registry=_registry(apigateway, "test-dev-tenants")
    )
    dev.ensure_plans(declaration)
    service.create("acme", "pro")
    dev.create("acme", "free")

    assert service.ensure_plans(declaration).keys() == {"free", "pro"}, "not dev-free, dev-pro"
    prod_keys, dev_keys = service.keys(), dev.keys()
    assert [(key.tenant, key.plan) for key in prod_keys] == [("acme", "pro")]
    assert [(key.tenant, key.plan) for key in dev_keys] == [("acme", "free")]
    dev.revoke("acme")
    assert service.keys()[0].enabled, "revoking dev's key leaves prod's alone"
