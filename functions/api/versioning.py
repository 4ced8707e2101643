"""API version lifecycle headers: Deprecation (RFC 9745), Sunset (RFC 8594) and a Link to
the successor version."""

from __future__ import annotations

import calendar
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datetime as dt

    from stratoserve.declaration import Declaration


def _epoch(day: dt.date) -> int:
    return calendar.timegm(day.timetuple())


def lifecycle(
    declaration: Declaration, api_version: str, path: str
) -> tuple[dict[str, str], dict[str, Any]]:
    """Headers and a body field for `path` (the request path) under `api_version`; both
    empty unless the version is deprecated."""
    spec = declaration.api.get(api_version)
    if spec is None or spec.deprecated is None:
        return {}, {}
    headers = {"deprecation": f"@{_epoch(spec.deprecated)}"}
    body: dict[str, Any] = {"deprecated": spec.deprecated.isoformat()}
    if spec.sunset is not None:
        headers["sunset"] = formatdate(_epoch(spec.sunset), usegmt=True)
        body["sunset"] = spec.sunset.isoformat()
    successor = declaration.successor_of(api_version)
    if successor is not None:
        successor_path = "/" + successor + path.removeprefix("/" + api_version)
        headers["link"] = f'<{successor_path}>; rel="successor-version"'
        body["successor_version"] = successor
        body["successor_url"] = successor_path
    return headers, body
