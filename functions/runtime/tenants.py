"""Who is calling: API Gateway passes only the key's id (`requestContext.identity.apiKeyId`);
the tenant and plan are the key's name and tags in API Gateway itself — the same store the
`stratoserve keys` command writes, on AWS and in the local stack (moto).

Lookups are cached per execution environment. boto3 is imported on the first lookup, not
at init: a function whose callers carry no key never pays for it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

TENANT_TAG = "stratoserve:tenant"
PLAN_TAG = "stratoserve:plan"
PROJECT_TAG = "stratoserve:project"
"""Which project (and deployed stage) a key or usage plan belongs to: one account may hold
several (`stratoserve keys` lists only its own)."""
CACHE_SECONDS = 60.0
"""How long a key's tenant and plan are trusted; a plan change reaches a warm environment
within this time (a revoked key is refused by API Gateway itself, at once)."""


class TenantLookupError(RuntimeError):
    """API Gateway could not be asked who owns a key (503, try again)."""


@dataclass(frozen=True)
class Tenant:
    name: str
    plan: str | None


def _default_client() -> Any:
    import boto3

    return boto3.client("apigateway")


class TenantDirectory:
    def __init__(
        self,
        client_factory: Callable[[], Any] = _default_client,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client_factory = client_factory
        self._client: Any = None
        self._clock = clock
        self._cache: dict[str, tuple[float, Tenant | None]] = {}
        self._lock = threading.Lock()

    def lookup(self, key_id: str) -> Tenant | None:
        """The tenant owning key `key_id`; None for a key stratoserve did not issue."""
        now = self._clock()
        cached = self._cache.get(key_id)
        if cached is not None and now - cached[0] < CACHE_SECONDS:
            return cached[1]
        tenant = self._ask(key_id)
        self._cache[key_id] = (now, tenant)
        return tenant

    def _ask(self, key_id: str) -> Tenant | None:
        try:
            with self._lock:
                if self._client is None:
                    self._client = self._client_factory()
            key = self._client.get_api_key(apiKey=key_id)
        except Exception as error:
            code = getattr(error, "response", {}).get("Error", {}).get("Code")
            if code == "NotFoundException":
                return None
            raise TenantLookupError(f"cannot look up API key {key_id}: {error}") from error
        tags = key.get("tags", {})
        if TENANT_TAG not in tags:
            return None
        return Tenant(name=tags[TENANT_TAG], plan=tags.get(PLAN_TAG) or None)
