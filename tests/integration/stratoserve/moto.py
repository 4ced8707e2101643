"""Test helper: moto keeps its state per process, across server instances."""

from __future__ import annotations

import urllib.request


def reset_moto(endpoint_url: str) -> None:
    request = urllib.request.Request(f"{endpoint_url}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass
