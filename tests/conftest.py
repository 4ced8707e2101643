"""Shared fixtures. Models are built once per run (the builder skips what is up to date,
so `make test`, which builds first, pays nothing twice)."""

from __future__ import annotations

import base64
import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest

from functions.runtime.tenants import Tenant, TenantDirectory
from stratoserve.declaration import Declaration, load_declaration

# jsii (the CDK app's tests) prints a Node 20 end-of-life banner on every start without it.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

ROOT = Path(__file__).resolve().parents[1]
EVENTS = Path(__file__).resolve().parent / "events"
DECLARATION_FILE = ROOT / "stratoserve.toml"
TEST_KEY_ID = "testkey123"
"""The API key id `rest_event` carries; `tenant_directory()` knows it as TEST_TENANT."""
TEST_TENANT = Tenant(name="test-tenant", plan="pro", id="t-0123456789abcdef")


class RegistryClient:
    """A small fake of the DynamoDB client, for the one call the runtime makes to the
    tenant registry (GetItem by key id)."""

    def __init__(self, tenants: dict[str, Tenant]) -> None:
        self.tenants = tenants
        self.calls = 0

    def get_item(self, *, TableName: str, Key: dict[str, Any], **_: Any) -> dict[str, Any]:
        self.calls += 1
        tenant = self.tenants.get(Key["key_id"]["S"])
        if tenant is None:
            return {}
        return {
            "Item": {
                "key_id": Key["key_id"],
                "tenant": {"S": tenant.name},
                "tenant_id": {"S": tenant.id},
                "plan": {"S": tenant.plan or ""},
                "enabled": {"BOOL": True},
                "secret_version": {"N": str(tenant.secret_version)},
            }
        }


def tenant_directory(tenants: dict[str, Tenant] | None = None) -> TenantDirectory:
    """A registry that knows TEST_KEY_ID (or `tenants`), as an environment's `tenants`."""
    client = RegistryClient(tenants if tenants is not None else {TEST_KEY_ID: TEST_TENANT})
    return TenantDirectory("tenants", lambda: client)


def sample_event(name: str) -> dict[str, Any]:
    """A SAM-generated sample event from tests/events/ (a fresh copy each call)."""
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return copy.deepcopy(event)


def rest_event(
    method: str,
    path: str,
    body: Any = None,
    *,
    raw_body: str | None = None,
    key_id: str | None = TEST_KEY_ID,
) -> dict[str, Any]:
    """The SAM REST proxy sample, pointed at another route and body, with the API key id
    API Gateway adds (None: an event no API Gateway sent, without one)."""
    event = sample_event("apigw-rest-proxy.json")
    if key_id is not None:
        event["requestContext"]["identity"]["apiKeyId"] = key_id
    event["httpMethod"] = method
    event["path"] = path
    event["requestContext"]["path"] = "/prod" + path
    event["requestContext"]["httpMethod"] = method
    event["pathParameters"] = {"proxy": path.lstrip("/")}
    if raw_body is not None:
        event["body"], event["isBase64Encoded"] = raw_body, False
    elif body is not None:
        event["body"] = base64.b64encode(json.dumps(body).encode()).decode()
        event["isBase64Encoded"] = True
    else:
        event["body"], event["isBase64Encoded"] = None, False
    return event


@pytest.fixture(scope="session")
def declaration() -> Declaration:
    return load_declaration(DECLARATION_FILE)


@pytest.fixture(scope="session")
def built_models(declaration: Declaration) -> Path:
    from models.builder import build_models
    from stratoserve.declaration import models_dir

    build_models(declaration, DECLARATION_FILE)
    return models_dir(declaration, DECLARATION_FILE)
