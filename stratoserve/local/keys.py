"""API keys the local gateway accepts.

For now one key, the dev key, held by the `dev` tenant; usage plans and the keys of other
tenants come with the key store that mirrors API Gateway's. The gateway only needs
`lookup`, so that store slots in here.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pathlib import Path

DEV_KEY_ENV = "STRATOSERVE_DEV_API_KEY"
DEV_TENANT = "dev"
# API Gateway refuses API key values shorter than 20 characters.
MIN_KEY_LENGTH = 20


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    tenant: str
    value: str = field(repr=False)


class KeyStore(Protocol):
    def lookup(self, value: str) -> ApiKey | None: ...


def key_id_for(value: str) -> str:
    """A stable, non-secret id for a key value (API Gateway ids are 10 lowercase chars)."""
    return hashlib.sha256(value.encode()).hexdigest()[:10]


class StaticKeys:
    def __init__(self, keys: list[ApiKey]) -> None:
        self._keys = keys

    def lookup(self, value: str) -> ApiKey | None:
        for key in self._keys:
            if hmac.compare_digest(key.value.encode(), value.encode()):
                return key
        return None


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
