"""Deprecation (RFC 9745), Sunset (RFC 8594) and successor links from the declaration."""

from __future__ import annotations

from functions.api.versioning import lifecycle
from stratoserve.declaration import load_declaration
from tests.conftest import DECLARATION_FILE


def test_deprecated_version_headers_and_body() -> None:
    declaration = load_declaration(DECLARATION_FILE)

    headers, body = lifecycle(declaration, "v1", "/v1/predict/embed")

    assert headers == {
        "deprecation": "@1790812800",
        "sunset": "Wed, 30 Jun 2027 00:00:00 GMT",
        "link": '</v2/predict/embed>; rel="successor-version"',
    }
    assert body == {
        "deprecated": "2026-10-01",
        "sunset": "2027-06-30",
        "successor_version": "v2",
        "successor_url": "/v2/predict/embed",
    }


def test_current_and_unknown_versions_carry_nothing() -> None:
    declaration = load_declaration(DECLARATION_FILE)

    assert lifecycle(declaration, "v2", "/v2/models") == ({}, {})
    assert lifecycle(declaration, "v7", "/v7/models") == ({}, {})
