"""The local API Gateway's keys at each start of `stratoserve dev`: moto starts empty, so
the usage plans, the keys kept in keys.json and their tenant registry entries are made
again, and the dev key is put on the most generous plan."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from stratoserve.keys import KeysError, KeyService, LocalKeyStore, StoredKey
from stratoserve.local.aws import client as aws_client
from stratoserve.local.keys import DEV_TENANT, GatewayKeys
from stratoserve.tenants import TenantRegistry, new_tenant_id

if TYPE_CHECKING:
    from pathlib import Path

    from stratoserve.declaration import Declaration

logger = logging.getLogger("stratoserve.stack")


def restore_keys(
    declaration: Declaration,
    aws_url: str,
    state: Path,
    dev_key: str,
    tenants_table: str,
    token: str,
) -> GatewayKeys:
    """Recreate the local API Gateway's usage plans and keys in the fresh moto server, and
    their tenant registry entries (same tenant ids and secret versions as before the
    restart): the keys kept in keys.json, and the dev key on the most generous plan."""
    client = aws_client("apigateway", aws_url, token)
    registry = TenantRegistry(aws_client("dynamodb", aws_url, token), tenants_table)
    service = KeyService(client, project=declaration.project.name, registry=registry)
    service.ensure_plans(declaration)
    store = LocalKeyStore(state)
    stored_keys = _with_dev_key(store.load(), dev_key, declaration.most_generous_plan())
    restored = []
    for stored in stored_keys:
        try:
            issued = service.create(
                stored.tenant,
                stored.plan,
                value=stored.key,
                # A keys.json from before the registry: the name was the tenant's id.
                tenant_id=stored.tenant_id or stored.tenant,
                secret_version=stored.secret_version,
            )
            if not stored.enabled:
                service.revoke(stored.tenant)
            restored.append(replace(stored, tenant_id=issued.tenant_id))
        except KeysError as error:
            # Kept, but disabled: a later key of the tenant must not lose to this one.
            logger.warning("key of tenant %s not restored: %s", stored.tenant, error)
            restored.append(replace(stored, enabled=False))
    store.save(restored)
    keys = GatewayKeys(client, store)
    keys.reload()
    return keys


def _with_dev_key(keys: list[StoredKey], value: str, plan: str | None) -> list[StoredKey]:
    """The dev key, active on `plan`; an earlier dev key with another value is disabled. The
    same dev key keeps its tenant id and secret version (its callback secret)."""
    same = [key for key in keys if key.tenant == DEV_TENANT and key.key == value]
    kept = [
        replace(key, enabled=False) if key.tenant == DEV_TENANT and key.key != value else key
        for key in keys
        if not (key.tenant == DEV_TENANT and key.key == value)
    ]
    dev = StoredKey(DEV_TENANT, plan or "", value, True, tenant_id=new_tenant_id())
    if same:
        dev = replace(same[-1], plan=plan or "", enabled=True)
    return [*kept, dev]
