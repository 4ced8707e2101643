"""API version lifecycle headers: Deprecation (RFC 9745), Sunset (RFC 8594) and a Link to
the successor version."""

from __future__ import annotations

import calendar
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datetime as dt

    from starlette.requests import Request

    from stratoserve.declaration import Declaration


def _epoch(day: dt.date) -> int:
    return calendar.timegm(day.timetuple())


def public_prefix(request: Request) -> str:
    """What precedes the API's own paths in the URL the client called: "/prod" on an
    execute-api URL (API Gateway puts the stage in `requestContext.path`), "" behind a
    custom domain or the local gateway."""
    event = request.scope.get("aws.event") or {}
    seen = (event.get("requestContext") or {}).get("path") or ""
    path = event.get("path") or ""
    if path and seen.endswith(path):
        return seen[: len(seen) - len(path)]
    return ""


def lifecycle(
    declaration: Declaration,
    api_version: str,
    path: str,
    *,
    prefix: str = "",
    model: str | None = None,
) -> tuple[dict[str, str], dict[str, Any]]:
    """Headers and a body field for `path` under `api_version`; both empty unless the
    version is deprecated. The successor link is given only where the successor serves
    the same model."""
    spec = declaration.api.get(api_version)
    if spec is None or spec.deprecated is None:
        return {}, {}
    headers = {"deprecation": f"@{_epoch(spec.deprecated)}"}
    body: dict[str, Any] = {"deprecated": spec.deprecated.isoformat()}
    if spec.sunset is not None:
        headers["sunset"] = formatdate(_epoch(spec.sunset), usegmt=True)
        body["sunset"] = spec.sunset.isoformat()
    successor = declaration.successor_of(api_version)
    if successor is not None and (model is None or model in declaration.api[successor].models):
        successor_path = prefix + "/" + successor + path.removeprefix("/" + api_version)
        headers["link"] = f'<{successor_path}>; rel="successor-version"'
        body["successor_version"] = successor
        body["successor_url"] = successor_path
    return headers, body
