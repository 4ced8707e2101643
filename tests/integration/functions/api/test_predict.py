"""POST /{v}/predict/{model} through Mangum with real models and SAM-shaped events."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_digits

from stratoserve.declaration import function_environment as variables
from tests.conftest import TEST_KEY_ID, rest_event, sample_event, tenant_directory

PAIR = ["A man is eating food.", "A man is eating a piece of bread."]


def _cosine(a: list[float], b: list[float]) -> float:
    x, y = np.asarray(a), np.asarray(b)
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


def test_the_sam_sample_event_gets_a_digit_label(invoke: Any) -> None:
    event = sample_event("apigw-rest-proxy.json")
    event["requestContext"]["identity"]["apiKeyId"] = TEST_KEY_ID  # API Gateway adds it
    sent = json.loads(base64.b64decode(event["body"]))["inputs"][0]

    status, headers, body = invoke("digits", event)

    assert status == 200
    assert body["model"] == {"name": "digits", "version": "1"}
    assert body["api_version"] == "v1"
    (output,) = body["outputs"]
    assert output["label"] == 0, "the sample's 8x8 image is a handwritten 0"
    assert len(sent) == 64
    assert output["probabilities"][0] == max(output["probabilities"])
    assert headers["x-request-id"] == event["requestContext"]["requestId"]
    assert headers["x-model-version"] == "1"


def test_digits_labels_match_the_held_out_data(invoke: Any) -> None:
    digits = load_digits()
    rows = digits.data[-60:].tolist()

    status, _, body = invoke("digits", rest_event("POST", "/v2/predict/digits", {"inputs": rows}))

    assert status == 200
    labels = [output["label"] for output in body["outputs"]]
    accuracy = np.mean(np.asarray(labels) == digits.target[-60:])
    assert accuracy >= 0.9
    for output in body["outputs"]:
        assert sum(output["probabilities"]) == pytest.approx(1.0, abs=1e-4)


def test_v1_embeddings_of_the_classic_pair_have_cosine_about_0_755(invoke: Any) -> None:
    status, headers, body = invoke(
        "embed", rest_event("POST", "/v1/predict/embed", {"inputs": PAIR})
    )

    assert status == 200
    assert body["model"] == {"name": "embed", "version": "1"}
    first, second = body["outputs"]
    assert len(first) == 384
    assert np.linalg.norm(first) == pytest.approx(1.0, abs=1e-4)
    assert _cosine(first, second) == pytest.approx(0.755, abs=0.01)
    assert headers["x-model-version"] == "1"


def test_v2_serves_the_int8_version_close_to_v1(invoke: Any) -> None:
    _, _, v1 = invoke("embed", rest_event("POST", "/v1/predict/embed", {"inputs": PAIR}))
    status, headers, v2 = invoke("embed", rest_event("POST", "/v2/predict/embed", {"inputs": PAIR}))

    assert status == 200
    assert v2["model"] == {"name": "embed", "version": "2"}
    assert headers["x-model-version"] == "2"
    for fp32, int8 in zip(v1["outputs"], v2["outputs"], strict=True):
        assert _cosine(fp32, int8) >= 0.97
    assert _cosine(*v2["outputs"]) == pytest.approx(0.755, abs=0.03)


def test_a_deprecated_version_says_so_and_points_at_its_successor(invoke: Any) -> None:
    _, headers, body = invoke("embed", rest_event("POST", "/v1/predict/embed", {"inputs": PAIR}))

    assert headers["deprecation"] == "@1790812800"  # 2026-10-01T00:00:00Z, RFC 9745
    assert headers["sunset"] == "Wed, 30 Jun 2027 00:00:00 GMT"  # RFC 8594 HTTP-date
    # The SAM sample is an execute-api call: its stage prefix stays in the link.
    assert headers["link"] == '</prod/v2/predict/embed>; rel="successor-version"'
    assert body["deprecation"]["successor_version"] == "v2"

    _, current_headers, current = invoke(
        "embed", rest_event("POST", "/v2/predict/embed", {"inputs": PAIR})
    )
    assert "deprecation" not in current_headers
    assert "sunset" not in current_headers
    assert "deprecation" not in current


@pytest.mark.parametrize(
    ("function", "path", "raw", "status", "message"),
    [
        ("embed", "/v2/predict/embed", "{not json", 400, "request body is not valid JSON"),
        ("embed", "/v2/predict/embed", "[1, 2]", 422, 'JSON object with an "inputs" list'),
        ("embed", "/v2/predict/embed", '{"inputs": "text"}', 422, '"inputs" must be a list'),
        ("embed", "/v2/predict/embed", '{"inputs": []}', 422, '"inputs" must not be empty'),
        (
            "embed",
            "/v2/predict/embed",
            '{"inputs": ["ok", 3]}',
            422,
            "inputs[1]: expected a string",
        ),
        ("embed", "/v2/predict/embed", '{"inputs": ["  "]}', 422, "inputs[0]: text is empty"),
        ("digits", "/v1/predict/digits", '{"inputs": [[1, 2]]}', 422, "expected 64 numbers, got 2"),
        ("digits", "/v1/predict/digits", '{"inputs": [["a"]]}', 422, "expected a list of numbers"),
        ("digits", "/v1/predict/digits", '{"inputs": [5]}', 422, "expected a list of numbers"),
        ("api", "/v9/predict/embed", '{"inputs": ["x"]}', 404, "unknown API version v9"),
        ("api", "/v1/predict/nope", '{"inputs": ["x"]}', 404, "unknown model nope in v1"),
        ("api", "/v1/nowhere", None, 404, "Not Found"),
    ],
)
def test_bad_requests_get_a_4xx_that_says_what_is_wrong(
    invoke: Any, function: str, path: str, raw: str | None, status: int, message: str
) -> None:
    code, headers, body = invoke(function, rest_event("POST", path, raw_body=raw))

    assert code == status
    assert message in body["message"]
    assert headers["content-type"] == "application/json"
    assert "Traceback" not in json.dumps(body)


def test_a_text_over_max_text_chars_is_a_422_naming_it(invoke: Any, declaration: Any) -> None:
    limit = declaration.models["embed"].max_text_chars
    body = {"inputs": ["ok", "ok", "ok", "a" * (limit + 1)]}

    code, _, answer = invoke("embed", rest_event("POST", "/v2/predict/embed", body))

    assert code == 422
    assert answer == {"message": f"inputs[3]: text longer than {limit} characters"}


def test_too_many_inputs_for_the_inline_path_needs_the_job_path(
    invoke: Any, declaration: Any
) -> None:
    # Over the inline limit a request becomes a job (tests/integration/functions/api/
    # test_jobs.py); a function not told where the job store is says so, and never runs it.
    limit = declaration.routing_for("embed").inline_max_inputs
    event = rest_event("POST", "/v2/predict/embed", {"inputs": ["x"] * (limit + 1)})

    status, _, body = invoke("embed", event)

    assert status == 503
    assert variables.JOBS_TABLE in body["message"]


def test_nan_is_refused_not_computed(invoke: Any) -> None:
    # NaN is not JSON (RFC 8259); a lenient parser would hand it to the model.
    row = "[" + ",".join(["NaN"] + ["0"] * 63) + "]"
    status, _, body = invoke(
        "digits", rest_event("POST", "/v1/predict/digits", raw_body=f'{{"inputs": [{row}]}}')
    )

    assert status == 400
    assert "not valid JSON" in body["message"]


def test_models_lists_what_the_version_serves(invoke: Any) -> None:
    status, headers, body = invoke("api", rest_event("GET", "/v2/models"))

    assert status == 200
    assert {(m["name"], m["version"]) for m in body["models"]} == {("digits", "1"), ("embed", "2")}
    assert "deprecation" not in headers

    _, old_headers, old = invoke("api", rest_event("GET", "/v1/models"))
    assert {(m["name"], m["version"]) for m in old["models"]} == {("digits", "1"), ("embed", "1")}
    assert old_headers["link"] == '</prod/v2/models>; rel="successor-version"'


def test_health_answers_without_models(invoke: Any) -> None:
    status, _, body = invoke("api", rest_event("GET", "/health"))

    assert status == 200
    assert body == {"status": "ok", "function": "api", "models_loaded": []}


def test_a_number_too_large_for_float32_is_422_not_a_null(invoke: Any) -> None:
    row = [1e39] + [0] * 63

    status, _, body = invoke("digits", rest_event("POST", "/v1/predict/digits", {"inputs": [row]}))

    assert status == 422
    assert "inputs[0]: a value is too large for float32" in body["message"]


def test_values_that_overflow_the_model_are_422_not_null_probabilities(invoke: Any) -> None:
    # Found by the fuzz suite: float32 holds 3e38, the model's arithmetic does not (it gave
    # a 200 with NaN probabilities, written as nulls, and a meaningless label).
    rows = [[1.0] * 64, [3e38] * 64]

    status, _, body = invoke("digits", rest_event("POST", "/v2/predict/digits", {"inputs": rows}))

    assert status == 422
    assert body == {
        "message": "inputs[1]: values too large for this model (its probabilities overflow)"
    }


def test_a_trailing_slash_reaches_the_same_route(invoke: Any) -> None:
    status, headers, body = invoke(
        "embed", rest_event("POST", "/v2/predict/embed/", {"inputs": ["x"]})
    )

    assert status == 200
    assert headers["x-model-version"] == "2"
    assert body["model"]["name"] == "embed"


def test_links_follow_the_url_the_client_called(invoke: Any) -> None:
    execute_api = rest_event("GET", "/v2/models")  # requestContext.path "/prod/v2/models"
    _, _, models = invoke("api", execute_api)
    assert {m["predict_url"] for m in models["models"]} == {
        "/prod/v2/predict/digits",
        "/prod/v2/predict/embed",
    }

    custom_domain = rest_event("POST", "/v1/predict/embed", {"inputs": ["x"]})
    custom_domain["requestContext"]["path"] = "/v1/predict/embed"
    _, headers, body = invoke("embed", custom_domain)
    assert headers["link"] == '</v2/predict/embed>; rel="successor-version"'
    assert body["deprecation"]["successor_url"] == "/v2/predict/embed"


def test_an_unexpected_failure_is_a_plain_500_with_the_request_id(
    declaration: Any, built_models: Any, tmp_path: Any
) -> None:
    # A real misdeclaration: MiniLM's graph declared as a classifier fails inside
    # onnxruntime at run time (it wants int64 token ids, gets float32 rows).
    from mangum import Mangum

    from functions.api.app import create_app
    from functions.api.dependencies import current_environment
    from functions.runtime.environment import ExecutionEnvironment
    from stratoserve.declaration import load_declaration

    broken = tmp_path / "stratoserve.toml"
    broken.write_text(
        f'[project]\nmodels_dir = "{built_models}"\n'
        '[models.digits]\ntask = "classify"\n'
        '[models.digits.versions.1]\nartifact = "embed/2/model.onnx"\n'
        '[api.v1]\nmodels = { digits = "1" }\n'
    )
    environment = ExecutionEnvironment(load_declaration(broken), broken, "digits")
    environment.tenants = tenant_directory()
    app = create_app(environment.declaration)

    async def provide() -> ExecutionEnvironment:
        return environment

    app.dependency_overrides[current_environment] = provide
    event = rest_event("POST", "/v1/predict/digits", {"inputs": [[1.0, 2.0]]})

    result = Mangum(app, lifespan="off")(event, None)  # type: ignore[arg-type]

    assert result["statusCode"] == 500
    assert json.loads(result["body"]) == {"message": "Internal server error"}
    assert result["headers"]["x-request-id"] == event["requestContext"]["requestId"]
