"""The gateway's resources, derived from the declaration the way the CDK app lays them out
on API Gateway: literal resources per API version and model (each integrated with the
function that serves the model), /health without a key, and a greedy `/{proxy+}` that
sends everything else to the api function, which answers unknown versions and models with
a JSON 404."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stratoserve.declaration.schema import API_FUNCTION

if TYPE_CHECKING:
    from stratoserve.declaration.schema import Declaration

PROXY_RESOURCE = "/{proxy+}"


@dataclass(frozen=True)
class Route:
    resource: str
    methods: frozenset[str]
    function: str
    api_key_required: bool = True


@dataclass(frozen=True)
class Match:
    route: Route
    path_parameters: dict[str, str] | None


class MethodNotDeclared(LookupError):
    """The resource exists without this method: API Gateway answers 403."""


class RouteTable:
    def __init__(self, routes: list[Route]) -> None:
        self._literal = {route.resource: route for route in routes if "{" not in route.resource}
        # Resources with a path parameter ("/v2/jobs/{job_id}"): one path segment each.
        self._templates = [
            (_pattern(route.resource), route) for route in routes if "{" in route.resource
        ]
        self._proxy = Route(PROXY_RESOURCE, frozenset({"ANY"}), API_FUNCTION)

    @classmethod
    def from_declaration(cls, declaration: Declaration) -> RouteTable:
        routes = [Route("/health", frozenset({"GET"}), API_FUNCTION, api_key_required=False)]
        for api_version, spec in declaration.api.items():
            routes.append(Route(f"/{api_version}/models", frozenset({"GET"}), API_FUNCTION))
            routes.append(Route(f"/{api_version}/jobs", frozenset({"POST"}), API_FUNCTION))
            routes.append(
                Route(f"/{api_version}/jobs/{{job_id}}", frozenset({"GET", "DELETE"}), API_FUNCTION)
            )
            routes.extend(
                Route(
                    f"/{api_version}/predict/{model}",
                    frozenset({"POST"}),
                    declaration.function_for_model(model),
                )
                for model in spec.models
            )
        return cls(routes)

    def routes(self) -> list[Route]:
        return [*self._literal.values(), *(route for _, route in self._templates), self._proxy]

    def match(self, method: str, path: str) -> Match | None:
        """The route for a request; None where API Gateway has no resource at all."""
        route = self._literal.get(path.rstrip("/") or "/")
        if route is not None:
            if method not in route.methods:
                raise MethodNotDeclared(f"{method} {path}")
            return Match(route, None)
        for pattern, template in self._templates:
            found = pattern.match(path.rstrip("/"))
            if found is not None:
                if method not in template.methods:
                    raise MethodNotDeclared(f"{method} {path}")
                return Match(template, found.groupdict())
        proxy = path.strip("/")
        if not proxy:
            return None
        return Match(self._proxy, {"proxy": proxy})


def _pattern(resource: str) -> re.Pattern[str]:
    """ "/v2/jobs/{job_id}" -> a pattern whose named groups are the path parameters."""
    parts = [
        f"(?P<{part[1:-1]}>[^/]+)" if part.startswith("{") else re.escape(part)
        for part in resource.split("/")
    ]
    return re.compile("^" + "/".join(parts) + "$")
