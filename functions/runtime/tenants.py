"""Who is calling: API Gateway passes only the key's id (`requestContext.identity.apiKeyId`);
the tenant registry says whose key it is. The registry is a DynamoDB table keyed by the key
id, written by `stratoserve keys` next to the API Gateway key (on AWS and in the local
stack's moto alike): the tenant's name, its immutable id, its plan and the version of its
callback secret. A function reads one item with GetItem, the only thing it is granted on
the table: it cannot list keys, and it never sees a key's value.

Lookups are cached per execution environment. boto3 is imported on the first lookup, not
at init.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stratoserve.declaration import function_environment as variables

if TYPE_CHECKING:
    from collections.abc import Callable

TENANT_TAG = "stratoserve:tenant"
PLAN_TAG = "stratoserve:plan"
PROJECT_TAG = "stratoserve:project"
"""Which project (and deployed stage) a key or usage plan belongs to: one account may hold
several (`stratoserve keys` lists only its own)."""
CACHE_SECONDS = 60.0
"""How long a key's registry entry is trusted: a plan change, a rotated callback secret or
a revocation reaches a warm environment within this time (API Gateway itself refuses a
revoked key at once)."""

# The registry's attributes (stratoserve/keys.py writes them).
KEY_ID = "key_id"
TENANT_NAME = "tenant"
TENANT_ID = "tenant_id"
PLAN = "plan"
SECRET_VERSION = "secret_version"
ENABLED = "enabled"


class TenantLookupError(RuntimeError):
    """The registry could not be asked who owns a key (worth another try)."""


@dataclass(frozen=True)
class Tenant:
    name: str
    """What people call the tenant (logs, metrics, `stratoserve keys`); may be re-issued."""
    plan: str | None
    id: str
    """Never re-issued: jobs and callback secrets belong to it, not to the name."""
    secret_version: int = 1
    """The callback secret's version (functions/runtime/callbacks.py tenant_secret)."""


def tenant_from_item(item: dict[str, Any]) -> Tenant | None:
    """A registry item (DynamoDB's typed JSON) as a tenant; None for a disabled key or an
    item that is not a tenant's."""
    try:
        if not item.get(ENABLED, {}).get("BOOL", False):
            return None
        return Tenant(
            name=item[TENANT_NAME]["S"],
            plan=item.get(PLAN, {}).get("S") or None,
            id=item[TENANT_ID]["S"],
            secret_version=int(item.get(SECRET_VERSION, {}).get("N", "1")),
        )
    except (KeyError, TypeError, ValueError):
        return None


def _default_client() -> Any:
    import boto3

    return boto3.client("dynamodb")


class TenantDirectory:
    def __init__(
        self,
        table: str | None,
        client_factory: Callable[[], Any] = _default_client,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`table`: the registry's name (STRATOSERVE_TENANTS_TABLE); without one, every
        lookup fails (a 503 that names the missing setting)."""
        self._table = table
        self._client_factory = client_factory
        self._client: Any = None
        self._clock = clock
        self._cache: dict[str, tuple[float, Tenant | None]] = {}
        self._lock = threading.Lock()

    def lookup(self, key_id: str) -> Tenant | None:
        """The tenant owning key `key_id`; None for a key the registry does not hold, or
        holds as revoked."""
        now = self._clock()
        cached = self._cache.get(key_id)
        if cached is not None and now - cached[0] < CACHE_SECONDS:
            return cached[1]
        tenant = self._ask(key_id)
        self._cache[key_id] = (now, tenant)
        return tenant

    def _ask(self, key_id: str) -> Tenant | None:
        if not self._table:
            raise TenantLookupError(f"no tenant registry: {variables.TENANTS_TABLE} is unset")
        try:
            with self._lock:
                if self._client is None:
                    self._client = self._client_factory()
            answer = self._client.get_item(
                TableName=self._table, Key={KEY_ID: {"S": key_id}}, ConsistentRead=True
            )
        except Exception as error:
            raise TenantLookupError(f"cannot look up API key {key_id}: {error}") from error
        item = answer.get("Item")
        return None if item is None else tenant_from_item(item)
