"""/openapi.json describes what the gateway serves well enough to generate clients and
requests from (the fuzz suite, tests/soak/test_fuzz.py, generates its requests from it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from functions.api.app import create_app
from stratoserve.declaration.routes import PROXY_RESOURCE, RouteTable

if TYPE_CHECKING:
    from stratoserve.declaration import Declaration


@pytest.fixture(scope="module")
def schema(declaration: Declaration) -> dict[str, Any]:
    return create_app(declaration).openapi()


def _operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
    ]


def _body(operation: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = operation["requestBody"]["content"]["application/json"]["schema"]
    return body


def test_every_route_of_the_gateway_is_described(
    schema: dict[str, Any], declaration: Declaration
) -> None:
    gateway = {
        (route.resource, method.lower())
        for route in RouteTable.from_declaration(declaration).routes()
        if route.resource != PROXY_RESOURCE
        for method in route.methods
    }

    assert {(path, method) for path, method, _ in _operations(schema)} == gateway


def test_job_routes_declare_their_job_id(schema: dict[str, Any]) -> None:
    for method in ("get", "delete"):
        operation = schema["paths"]["/v2/jobs/{job_id}"][method]

        assert operation["parameters"] == [
            {
                "name": "job_id",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "format": "uuid"},
            }
        ]


def test_predict_bodies_take_the_inputs_of_the_models_task(schema: dict[str, Any]) -> None:
    digits = _body(schema["paths"]["/v2/predict/digits"]["post"])
    embed = _body(schema["paths"]["/v2/predict/embed"]["post"])

    assert digits["required"] == ["inputs"]
    assert digits["properties"]["inputs"]["items"]["type"] == "array"
    assert digits["properties"]["inputs"]["items"]["items"]["type"] == "number"
    assert embed["properties"]["inputs"]["items"]["type"] == "string"
    assert embed["properties"]["inputs"]["minItems"] == 1


def test_a_job_body_is_one_of_the_served_models_with_its_inputs(schema: dict[str, Any]) -> None:
    choices = _body(schema["paths"]["/v1/jobs"]["post"])["oneOf"]

    by_model = {choice["properties"]["model"]["const"]: choice for choice in choices}
    assert set(by_model) == {"digits", "embed"}
    assert by_model["embed"]["properties"]["inputs"]["items"]["type"] == "string"
    # The handler refuses fields it does not know: so does the schema.
    assert all(choice["additionalProperties"] is False for choice in choices)
    assert by_model["digits"]["properties"]["callback_url"]["format"] == "uri"
    assert by_model["digits"]["properties"]["callback_url"]["maxLength"] == 2048


def test_every_route_but_health_needs_the_api_key(schema: dict[str, Any]) -> None:
    scheme = schema["components"]["securitySchemes"]["api_key"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "x-api-key")
    for path, method, operation in _operations(schema):
        expected = None if path == "/health" else [{"api_key": []}]
        assert operation.get("security") == expected, f"{method} {path}"


def test_answers_and_errors_have_schemas(schema: dict[str, Any]) -> None:
    error = {"$ref": "#/components/schemas/Error"}
    for path, method, operation in _operations(schema):
        for status, response in operation["responses"].items():
            answer = response["content"]["application/json"]["schema"]
            if status.startswith("2"):
                assert answer.get("$ref"), f"{method} {path} {status}: no schema"
            else:
                assert answer == error, f"{method} {path} {status}"
        if path != "/health":
            assert {"403", "429"} <= set(operation["responses"]), f"{method} {path}"

    predict = schema["paths"]["/v1/predict/digits"]["post"]["responses"]
    assert predict["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ClassifyPrediction"
    }
    assert {"200", "202", "400", "413", "422"} <= set(predict)


def test_a_submitted_job_links_to_the_routes_that_follow_it(schema: dict[str, Any]) -> None:
    operation_ids = {operation["operationId"] for _, _, operation in _operations(schema)}

    for path in ("/v2/jobs", "/v2/predict/embed"):
        links = schema["paths"][path]["post"]["responses"]["202"]["links"]

        assert {link["operationId"] for link in links.values()} == {
            "get_job_v2",
            "cancel_job_v2",
        }
        assert {link["operationId"] for link in links.values()} <= operation_ids
        for link in links.values():
            assert link["parameters"] == {"job_id": "$response.body#/job_id"}


def test_successful_answers_declare_their_headers(schema: dict[str, Any]) -> None:
    predict = schema["paths"]["/v1/predict/embed"]["post"]["responses"]
    submit = schema["paths"]["/v1/jobs"]["post"]["responses"]

    def required(headers: dict[str, Any]) -> set[str]:
        return {name for name, header in headers.items() if header.get("required")}

    assert required(predict["200"]["headers"]) == {"x-request-id", "x-model-version"}
    assert required(predict["202"]["headers"]) == {"x-request-id", "location"}
    assert required(submit["202"]["headers"]) == {"x-request-id", "location"}
    # v1 is deprecated: its answers may say so.
    assert {"deprecation", "sunset", "link"} <= set(predict["200"]["headers"])
