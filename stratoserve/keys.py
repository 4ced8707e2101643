"""Tenants and their API keys, through API Gateway's own API and the tenant registry.

One code path serves both targets: `KeyService` makes the same boto3 `apigateway` calls
(create_api_key, create_usage_plan_key, get_api_keys, update_api_key, get_usage) against a
deployed stack (`--target aws`) or the local stack's moto server (`--target local`), and
writes each key's entry in the tenant registry (stratoserve/tenants.py), which is all the
functions read. A key is named after its tenant and tagged with its plan; its value is
returned once, at creation, and never stored by AWS-side code.
"""

from __future__ import annotations

import fcntl
import json
import secrets
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from functions.runtime.tenants import PLAN_TAG, PROJECT_TAG, TENANT_TAG
from stratoserve.tenants import new_tenant_id

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Iterator

    from mypy_boto3_apigateway import APIGatewayClient

    from stratoserve.declaration import Declaration, PlanSpec
    from stratoserve.tenants import TenantEntry, TenantRegistry


class KeysError(Exception):
    """A key operation that cannot be done; the message says why and what to do."""


@dataclass(frozen=True)
class IssuedKey:
    tenant: str
    plan: str
    key_id: str
    key: str
    tenant_id: str
    secret_version: int = 1


@dataclass(frozen=True)
class TenantKey:
    tenant: str
    plan: str
    key_id: str
    enabled: bool
    created: str
    tenant_id: str | None = None
    """None: the key has no registry entry (made before the registry: `keys migrate`)."""


def new_key_value() -> str:
    return secrets.token_urlsafe(30)


class KeyService:
    def __init__(self, client: APIGatewayClient, *, project: str, registry: TenantRegistry) -> None:
        """`project`: the names' prefix, the declaration's project name (for a deployed
        stage other than prod, suffixed with it: stratoserve/declaration/stages.py)."""
        self._client = client
        self._project = project
        self.registry = registry
        # Usage plans and keys are account-wide: the prefix keeps projects and stages apart.
        self._prefix = f"{project}-"

    def ensure_plans(self, declaration: Declaration) -> dict[str, str]:
        """Create the declared usage plans that do not exist yet; plan name -> id."""
        existing = self._plan_ids()
        for name, plan in declaration.plans.items():
            if name not in existing:
                existing[name] = self._client.create_usage_plan(
                    name=self._prefix + name,
                    description=plan.description,
                    tags={PROJECT_TAG: self._project},
                    **_plan_limits(plan),
                )["id"]
        return existing

    def create(
        self,
        tenant: str,
        plan: str,
        *,
        value: str | None = None,
        tenant_id: str | None = None,
        secret_version: int = 1,
    ) -> IssuedKey:
        """A key for a tenant without an active one, under a new tenant id (or `tenant_id`,
        the local stack's replay of a kept key)."""
        plans = self._plan_ids()
        if (plan or plans) and plan not in plans:
            # With usage plans, every key needs one: API Gateway refuses a key in none.
            known = ", ".join(sorted(plans)) or "none"
            raise KeysError(f"unknown plan {plan!r} (usage plans: {known})")
        if any(key.tenant == tenant and key.enabled for key in self.keys()):
            raise KeysError(
                f"tenant {tenant} already has an active key; revoke it first "
                f"(stratoserve keys revoke --tenant {tenant})"
            )
        return self._issue(
            tenant,
            plan,
            plans,
            value=value,
            tenant_id=tenant_id or new_tenant_id(),
            secret_version=secret_version,
        )

    def rotate(self, tenant: str) -> tuple[IssuedKey, list[str]]:
        """A new key for the tenant, under the same tenant id (its jobs and callback secret
        stay), then its old keys revoked; the new key and the old ids."""
        active = self.registry.active(tenant)
        if not active:
            raise KeysError(
                f"tenant {tenant} has no active registered key; create one "
                f"(stratoserve keys create --tenant {tenant} --plan PLAN)"
            )
        current = active[-1]
        issued = self._issue(
            tenant,
            current.plan,
            self._plan_ids(),
            value=None,
            tenant_id=current.tenant_id,
            secret_version=current.secret_version,
        )
        old = [entry.key_id for entry in active]
        self._disable(old)
        return issued, old

    def rotate_secret(self, tenant: str) -> TenantEntry:
        """Bump the tenant's callback secret version (stratoserve/tenants.py)."""
        try:
            return self.registry.rotate_secret(tenant)
        except LookupError as error:
            raise KeysError(str(error)) from None

    def migrate(self) -> list[TenantKey]:
        """Register the active keys made before the registry existed (API Gateway tags
        only). Their tenant id is their name: the jobs they submitted are stored under it,
        and their callback secret (version 1) was derived from it, so both stay theirs."""
        migrated = []
        for key in self.keys():
            if key.enabled and key.tenant_id is None:
                self.registry.register(key.key_id, key.tenant, key.plan, tenant_id=key.tenant)
                migrated.append(key)
        return migrated

    def _issue(
        self,
        tenant: str,
        plan: str,
        plans: dict[str, str],
        *,
        value: str | None,
        tenant_id: str,
        secret_version: int,
    ) -> IssuedKey:
        value = value or new_key_value()
        created = self._client.create_api_key(
            name=tenant,
            enabled=True,
            value=value,
            tags={TENANT_TAG: tenant, PLAN_TAG: plan, PROJECT_TAG: self._project},
        )
        key_id = created["id"]
        try:
            self.registry.register(
                key_id, tenant, plan, tenant_id=tenant_id, secret_version=secret_version
            )
            if plan:  # a declaration without plans has keys without usage plans
                self._client.create_usage_plan_key(
                    usagePlanId=plans[plan], keyId=key_id, keyType="API_KEY"
                )
        except Exception:
            # Half made: no key may exist that the functions would refuse or not meter.
            self._client.delete_api_key(apiKey=key_id)
            self.registry.disable(key_id)
            raise
        return IssuedKey(
            tenant=tenant,
            plan=plan,
            key_id=key_id,
            key=value,
            tenant_id=tenant_id,
            secret_version=secret_version,
        )

    def keys(self) -> list[TenantKey]:
        registered = {entry.key_id: entry for entry in self.registry.entries()}
        keys = []
        for page in self._client.get_paginator("get_api_keys").paginate(includeValues=False):
            for item in page.get("items", []):
                tags = item.get("tags", {})
                if TENANT_TAG not in tags:
                    continue  # not one of ours
                if tags.get(PROJECT_TAG, self._project) != self._project:
                    continue  # another project's, or another stage's (untagged: older ours)
                created = item.get("createdDate")
                keys.append(
                    TenantKey(
                        tenant=tags[TENANT_TAG],
                        plan=tags.get(PLAN_TAG, ""),
                        key_id=item["id"],
                        enabled=bool(item.get("enabled")),
                        created=created.isoformat() if created else "",
                        tenant_id=(
                            registered[item["id"]].tenant_id if item["id"] in registered else None
                        ),
                    )
                )
        return sorted(keys, key=lambda key: (key.tenant, key.created))

    def revoke(self, tenant: str) -> list[str]:
        """Disable every key of the tenant (kept, for its usage history); their ids."""
        revoked = [key.key_id for key in self.keys() if key.tenant == tenant and key.enabled]
        if not revoked:
            raise KeysError(f"tenant {tenant} has no active key")
        self._disable(revoked)
        return revoked

    def tenant_ids(self, tenant: str) -> list[str]:
        """Every id the tenant name has had (jobs are stored by id), plus the name itself
        for keys made before the registry (their jobs are stored under the name)."""
        ids = self.registry.tenant_ids(tenant)
        return ids if tenant in ids else [*ids, tenant]

    def _disable(self, key_ids: list[str]) -> None:
        for key_id in key_ids:
            self._client.update_api_key(
                apiKey=key_id,
                patchOperations=[{"op": "replace", "path": "/enabled", "value": "false"}],
            )
            self.registry.disable(key_id)

    def usage(self, start: dt.date, end: dt.date, tenant: str | None = None) -> dict[str, Any]:
        """API Gateway's own count of each tenant's requests between two UTC days
        (get_usage), with what its plan's quota leaves."""
        plans = self._plan_ids()
        usage: dict[str, Any] = {}
        for key in self.keys():
            if (tenant and key.tenant != tenant) or key.plan not in plans:
                continue
            answer = self._client.get_usage(
                usagePlanId=plans[key.plan],
                keyId=key.key_id,
                startDate=start.isoformat(),
                endDate=end.isoformat(),
            )
            days = answer.get("items", {}).get(key.key_id, [])  # [[used, remaining], ...]
            entry = usage.setdefault(key.tenant, {"requests": 0, "plan": key.plan})
            entry["requests"] += sum(day[0] for day in days)
            if days and key.enabled:
                entry["quota_remaining"] = days[-1][1]
        return usage

    def _plan_ids(self) -> dict[str, str]:
        """This project's usage plans: plan name (without the prefix) -> id."""
        ids = {}
        for page in self._client.get_paginator("get_usage_plans").paginate():
            for item in page.get("items", []):
                project = item.get("tags", {}).get(PROJECT_TAG, self._project)
                # The tag tells stratoserve-pro from stratoserve-dev-pro (prefix stratoserve-).
                if item["name"].startswith(self._prefix) and project == self._project:
                    ids[item["name"].removeprefix(self._prefix)] = item["id"]
        return ids


def _plan_limits(plan: PlanSpec) -> dict[str, Any]:
    limits: dict[str, Any] = {"throttle": {"rateLimit": plan.rate, "burstLimit": plan.burst}}
    if plan.quota:
        limits["quota"] = {
            "limit": plan.quota.limit,
            "period": plan.quota.period,
            "offset": plan.quota.offset,
        }
    return limits


@dataclass(frozen=True)
class StoredKey:
    tenant: str
    plan: str
    key: str
    enabled: bool
    tenant_id: str = ""
    """The tenant's id ("" in a keys.json from before the registry: the name is the id)."""
    secret_version: int = 1


class LocalKeyStore:
    """The local stack's keys, kept across restarts of `stratoserve dev` in
    `.stratoserve/keys.json` (readable by the owner only): moto keeps its state in memory,
    so the stack replays this file into it at start. Never used for AWS."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "keys.json"

    def load(self) -> list[StoredKey]:
        try:
            raw = json.loads(self.path.read_text())
            return [StoredKey(**entry) for entry in raw["keys"]]
        except FileNotFoundError:
            return []
        except (ValueError, KeyError, TypeError) as error:
            raise KeysError(
                f"{self.path} is damaged ({error}); fix it or delete it to start without keys"
            ) from None

    def save(self, keys: list[StoredKey]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        content = json.dumps({"keys": [asdict(key) for key in keys]}, indent=2)
        with tempfile.NamedTemporaryFile(
            "w", dir=self.path.parent, prefix=".keys-", delete=False
        ) as temporary:  # created 0600, like mkstemp: the file holds key values
            temporary.write(content)
        Path(temporary.name).replace(self.path)

    def add(self, issued: IssuedKey) -> None:
        with self._locked():
            self.save([*self.load(), _stored(issued)])

    def rotate(self, issued: IssuedKey) -> None:
        """The tenant's new key, its earlier ones disabled."""
        with self._locked():
            kept = [
                replace(key, enabled=key.enabled and key.tenant != issued.tenant)
                for key in self.load()
            ]
            self.save([*kept, _stored(issued)])

    def set_secret_version(self, tenant: str, version: int) -> None:
        with self._locked():
            self.save(
                [
                    replace(key, secret_version=version)
                    if key.tenant == tenant and key.enabled
                    else key
                    for key in self.load()
                ]
            )

    def disable(self, tenant: str) -> None:
        with self._locked():
            self.save(
                [replace(key, enabled=key.enabled and key.tenant != tenant) for key in self.load()]
            )

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Two `stratoserve keys` at once must not lose each other's write."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with (self.path.parent / ".keys.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield


def _stored(issued: IssuedKey) -> StoredKey:
    return StoredKey(
        issued.tenant,
        issued.plan,
        issued.key,
        True,
        tenant_id=issued.tenant_id,
        secret_version=issued.secret_version,
    )
