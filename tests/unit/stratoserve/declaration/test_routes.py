"""The gateway's resources mirror the declaration, as the deployed API lays them out."""

from __future__ import annotations

import pytest

from stratoserve.declaration import load_declaration
from stratoserve.declaration.routes import PROXY_RESOURCE, MethodNotDeclared, RouteTable
from tests.conftest import DECLARATION_FILE


@pytest.fixture
def table() -> RouteTable:
    return RouteTable.from_declaration(load_declaration(DECLARATION_FILE))


def test_predict_goes_to_the_function_that_serves_the_model(table: RouteTable) -> None:
    match = table.match("POST", "/v2/predict/embed")

    assert match is not None
    assert match.route.function == "embed"
    assert match.route.api_key_required
    assert match.path_parameters is None


def test_health_needs_no_key_and_models_go_to_the_api_function(table: RouteTable) -> None:
    health = table.match("GET", "/health")
    models = table.match("GET", "/v1/models")

    assert health is not None and not health.route.api_key_required
    assert models is not None and models.route.function == "api"


def test_anything_else_goes_to_the_api_function_through_the_proxy(table: RouteTable) -> None:
    match = table.match("POST", "/v9/predict/nope")

    assert match is not None
    assert match.route.resource == PROXY_RESOURCE
    assert match.route.function == "api"
    assert match.path_parameters == {"proxy": "v9/predict/nope"}
    assert table.match("GET", "/") is None


def test_a_known_resource_without_that_method_is_not_declared(table: RouteTable) -> None:
    with pytest.raises(MethodNotDeclared):
        table.match("GET", "/v1/predict/digits")
