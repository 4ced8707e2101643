"""API keys the local gateway accepts: those of the local stack's API Gateway (moto),
where `stratoserve keys` creates and revokes them, plus where the dev key comes from.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from functions.runtime.tenants import PLAN_TAG, TENANT_TAG

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from stratoserve.keys import LocalKeyStore
    from stratoserve.local.throttling import PlanLimits

logger = logging.getLogger("stratoserve.gateway")

DEV_KEY_ENV = "STRATOSERVE_DEV_API_KEY"
DEV_TENANT = "dev"
# API Gateway refuses API key values shorter than 20 characters.
MIN_KEY_LENGTH = 20


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    tenant: str
    value: str = field(repr=False)
    plan: str | None = None


class KeyStore(Protocol):
    def lookup(self, value: str) -> ApiKey | None: ...


def key_id_for(value: str) -> str:
    """A stable, non-secret id for a key value (API Gateway ids are 10 lowercase chars)."""
    return hashlib.sha256(value.encode()).hexdigest()[:10]


class GatewayKeys:
    """The enabled keys of the local API Gateway, by value.

    The gateway looks keys up on every request, so they are held in memory and reloaded
    from moto when `keys.json` changes — `stratoserve keys` rewrites it after every create
    or revoke, so a revoked key is refused from the next request on."""

    def __init__(self, client: Any, store: LocalKeyStore) -> None:
        self._client = client
        self._store = store
        self._keys: dict[str, ApiKey] = {}
        self._seen: float | None = None

    def lookup(self, value: str) -> ApiKey | None:
        self._reload_if_changed()
        return self._keys.get(value)

    def quota_owners(self, plans: Mapping[str, PlanLimits]) -> dict[str, tuple[str, PlanLimits]]:
        """Each enabled key's usage id -> its tenant and plan limits."""
        return {
            key_id_for(key.value): (key.tenant, plans[key.plan])
            for key in self._keys.values()
            if key.plan is not None and key.plan in plans
        }

    def reload(self) -> None:
        keys: dict[str, ApiKey] = {}
        for page in self._client.get_paginator("get_api_keys").paginate(includeValues=True):
            for item in page.get("items", []):
                tags = item.get("tags", {})
                if item.get("enabled") and TENANT_TAG in tags:
                    keys[item["value"]] = ApiKey(
                        key_id=item["id"],
                        tenant=tags[TENANT_TAG],
                        value=item["value"],
                        plan=tags.get(PLAN_TAG),
                    )
        self._keys = keys

    def _reload_if_changed(self) -> None:
        try:
            changed = self._store.path.stat().st_mtime_ns
        except FileNotFoundError:
            changed = None
        if changed == self._seen:
            return
        try:
            self.reload()
        except Exception as error:
            # Keep serving with the keys we have and try again on the next request.
            logger.error("cannot reload API keys from the local API Gateway: %s", error)
            return
        self._seen = changed


def resolve_dev_key(explicit: str | None, state_dir: Path) -> tuple[str, str]:
    """The dev key and where it came from: --api-key, $STRATOSERVE_DEV_API_KEY, the key kept
    from an earlier run, or a new one (kept for the next run, readable by the owner only)."""
    if explicit:
        return _checked(explicit, "--api-key"), "--api-key"
    from_env = os.environ.get(DEV_KEY_ENV)
    if from_env:
        return _checked(from_env, DEV_KEY_ENV), DEV_KEY_ENV
    kept = state_dir / "dev-api-key"
    if kept.is_file():
        return _checked(kept.read_text().strip(), str(kept)), str(kept)
    value = secrets.token_urlsafe(30)
    state_dir.mkdir(parents=True, exist_ok=True)
    kept.touch(mode=0o600)
    kept.write_text(value + "\n")
    return value, "generated"


class BadKeyError(ValueError):
    pass


def _checked(value: str, source: str) -> str:
    if len(value) < MIN_KEY_LENGTH or not value.isprintable() or " " in value:
        raise BadKeyError(
            f"{source}: an API key needs at least {MIN_KEY_LENGTH} printable characters "
            "without spaces (API Gateway's rule)"
        )
    return value
