"""Tenants and their API keys, through API Gateway's own API.

One code path serves both targets: `KeyService` makes the same boto3 `apigateway` calls
(create_api_key, create_usage_plan_key, get_api_keys, update_api_key, get_usage) against a
deployed stack (`--target aws`) or the local stack's moto server (`--target local`). A key
is named after its tenant and tagged with its plan; its value is returned once, at
creation, and never stored by AWS-side code.
"""

from __future__ import annotations

import fcntl
import json
import secrets
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from functions.runtime.tenants import PLAN_TAG, PROJECT_TAG, TENANT_TAG

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Iterator

    from mypy_boto3_apigateway import APIGatewayClient

    from stratoserve.declaration import Declaration, PlanSpec


class KeysError(Exception):
    """A key operation that cannot be done; the message says why and what to do."""


@dataclass(frozen=True)
class IssuedKey:
    tenant: str
    plan: str
    key_id: str
    key: str


@dataclass(frozen=True)
class TenantKey:
    tenant: str
    plan: str
    key_id: str
    enabled: bool
    created: str


def new_key_value() -> str:
    return secrets.token_urlsafe(30)


class KeyService:
    def __init__(self, client: APIGatewayClient, *, project: str) -> None:
        """`project`: the names' prefix, the declaration's project name (for a deployed
        stage other than prod, suffixed with it: stratoserve/declaration/stages.py)."""
        self._client = client
        self._project = project
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

    def create(self, tenant: str, plan: str, *, value: str | None = None) -> IssuedKey:
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
        value = value or new_key_value()
        created = self._client.create_api_key(
            name=tenant,
            enabled=True,
            value=value,
            tags={TENANT_TAG: tenant, PLAN_TAG: plan, PROJECT_TAG: self._project},
        )
        if plan:  # a declaration without plans has keys without usage plans
            self._client.create_usage_plan_key(
                usagePlanId=plans[plan], keyId=created["id"], keyType="API_KEY"
            )
        return IssuedKey(tenant=tenant, plan=plan, key_id=created["id"], key=value)

    def keys(self) -> list[TenantKey]:
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
                    )
                )
        return sorted(keys, key=lambda key: (key.tenant, key.created))

    def revoke(self, tenant: str) -> list[str]:
        """Disable every key of the tenant (kept, for its usage history); their ids."""
        revoked = [key.key_id for key in self.keys() if key.tenant == tenant and key.enabled]
        if not revoked:
            raise KeysError(f"tenant {tenant} has no active key")
        for key_id in revoked:
            self._client.update_api_key(
                apiKey=key_id,
                patchOperations=[{"op": "replace", "path": "/enabled", "value": "false"}],
            )
        return revoked

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
            self.save([*self.load(), StoredKey(issued.tenant, issued.plan, issued.key, True)])

    def disable(self, tenant: str) -> None:
        with self._locked():
            self.save(
                [
                    StoredKey(key.tenant, key.plan, key.key, key.enabled and key.tenant != tenant)
                    for key in self.load()
                ]
            )

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Two `stratoserve keys` at once must not lose each other's write."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with (self.path.parent / ".keys.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield
