"""The tenant registry, as `stratoserve keys` writes it and the operator reads it.

One DynamoDB item per API key, keyed by the key's id: the tenant's name, its immutable id,
its plan, whether the key is active, and the version of the tenant's callback secret. The
functions read one item per caller (functions/runtime/tenants.py); nothing here runs in
Lambda. A separate table, not items in the job table: the functions may only GetItem here
(they write the job table), and the registry outlives jobs (no TTL).

A tenant's id is made when its name gets a key while it has no active one; it stays with
the name through key rotations, and is never made again: a name revoked and later
re-issued (to someone else, maybe) gets a new id, and none of the old jobs or secrets.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import secrets
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from functions.runtime.tenants import (
    ENABLED,
    KEY_ID,
    PLAN,
    SECRET_VERSION,
    TENANT_ID,
    TENANT_NAME,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

TABLE_SUFFIX = "-tenants"
CREATED = "created"


def table_name(prefix: str) -> str:
    """The registry's name for a project (a deployed stage: its prefix, e.g. app-dev)."""
    return prefix + TABLE_SUFFIX


def new_tenant_id() -> str:
    return f"t-{secrets.token_hex(8)}"


@dataclass(frozen=True)
class TenantEntry:
    key_id: str
    tenant: str
    tenant_id: str
    plan: str
    enabled: bool
    secret_version: int
    created: str


class TenantRegistry:
    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self.table = table

    def register(
        self,
        key_id: str,
        tenant: str,
        plan: str,
        *,
        tenant_id: str,
        secret_version: int = 1,
    ) -> TenantEntry:
        entry = TenantEntry(
            key_id=key_id,
            tenant=tenant,
            tenant_id=tenant_id,
            plan=plan,
            enabled=True,
            secret_version=secret_version,
            created=dt.datetime.now(dt.UTC).isoformat(),
        )
        self._client.put_item(
            TableName=self.table,
            Item={
                KEY_ID: {"S": key_id},
                TENANT_NAME: {"S": tenant},
                TENANT_ID: {"S": tenant_id},
                PLAN: {"S": plan},
                ENABLED: {"BOOL": True},
                SECRET_VERSION: {"N": str(secret_version)},
                CREATED: {"S": entry.created},
            },
        )
        return entry

    def disable(self, key_id: str) -> None:
        """The key's entry stays, disabled: the name's past ids remain for the operator."""
        with contextlib.suppress(self._client.exceptions.ConditionalCheckFailedException):
            self._client.update_item(
                TableName=self.table,
                Key={KEY_ID: {"S": key_id}},
                UpdateExpression="SET #enabled = :false",
                ConditionExpression="attribute_exists(key_id)",
                ExpressionAttributeNames={"#enabled": ENABLED},
                ExpressionAttributeValues={":false": {"BOOL": False}},
            )

    def entries(self) -> list[TenantEntry]:
        """Every entry, oldest first (a scan: the operator's view, a few items a tenant)."""
        found: list[TenantEntry] = []
        for page in self._client.get_paginator("scan").paginate(TableName=self.table):
            found.extend(_entry(item) for item in page.get("Items", []))
        return sorted(found, key=lambda entry: entry.created)

    def get(self, key_id: str) -> TenantEntry | None:
        item = self._client.get_item(
            TableName=self.table, Key={KEY_ID: {"S": key_id}}, ConsistentRead=True
        ).get("Item")
        return None if item is None else _entry(item)

    def active(self, tenant: str) -> list[TenantEntry]:
        """The tenant's active keys' entries (one, unless a rotation is half done)."""
        return [entry for entry in self.entries() if entry.tenant == tenant and entry.enabled]

    def tenant_ids(self, tenant: str) -> list[str]:
        """Every id the name has had, oldest first (its current one last, if active)."""
        ids: list[str] = []
        for entry in self.entries():
            if entry.tenant == tenant and entry.tenant_id not in ids:
                ids.append(entry.tenant_id)
        return ids

    def rotate_secret(self, tenant: str) -> TenantEntry:
        """Bump the tenant's callback secret version on its active keys' entries; the entry
        with the new version. Jobs submitted before keep the version they were stamped
        with; functions see the new one within functions.runtime.tenants.CACHE_SECONDS."""
        active = self.active(tenant)
        if not active:
            raise LookupError(f"tenant {tenant} has no active key")
        version = max(entry.secret_version for entry in active) + 1
        for entry in active:
            self._client.update_item(
                TableName=self.table,
                Key={KEY_ID: {"S": entry.key_id}},
                UpdateExpression="SET #version = :version",
                ConditionExpression="attribute_exists(key_id)",
                ExpressionAttributeNames={"#version": SECRET_VERSION},
                ExpressionAttributeValues={":version": {"N": str(version)}},
            )
        return replace(active[-1], secret_version=version)


def create_registry_table(client: DynamoDBClient, table: str) -> None:
    """The registry's table, as the CDK app's Tenants construct makes it (the local stack's
    moto; idempotent)."""
    with contextlib.suppress(client.exceptions.ResourceInUseException):
        client.create_table(
            TableName=table,
            KeySchema=[{"AttributeName": KEY_ID, "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": KEY_ID, "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )


def _entry(item: dict[str, Any]) -> TenantEntry:
    return TenantEntry(
        key_id=item[KEY_ID]["S"],
        tenant=item[TENANT_NAME]["S"],
        tenant_id=item[TENANT_ID]["S"],
        plan=item.get(PLAN, {}).get("S", ""),
        enabled=bool(item.get(ENABLED, {}).get("BOOL", False)),
        secret_version=int(item.get(SECRET_VERSION, {}).get("N", "1")),
        created=item.get(CREATED, {}).get("S", ""),
    )
