"""What /openapi.json says about the API, beyond what the handlers' signatures show.

The handlers read their bodies themselves (orjson, with messages that say what is wrong),
so FastAPI cannot infer the request bodies, the answers or the errors: they are declared
here, per model task, and checked against the running stack by the fuzz suite
(tests/soak/test_fuzz.py). Nothing here validates a request; the models below only
describe answers.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import TYPE_CHECKING, Any, Literal

from fastapi import Security
from fastapi.security import APIKeyHeader
from pydantic import BaseModel

from functions.runtime.callbacks import MAX_URL_LENGTH
from functions.runtime.jobs import JobStatus
from functions.runtime.models import FLOAT32_MAX

if TYPE_CHECKING:
    from collections.abc import Mapping

API_KEY = APIKeyHeader(
    name="x-api-key",
    scheme_name="api_key",
    description="The API key of a tenant (`stratoserve keys create`); checked by API Gateway.",
    # API Gateway checks the key before the function runs: this only documents it.
    auto_error=False,
)

API_KEY_REQUIRED = [Security(API_KEY)]
"""A router's dependencies that put the API key in its routes' security requirements."""


class Error(BaseModel):
    message: str


class ModelRef(BaseModel):
    name: str
    version: str


class Deprecation(BaseModel):
    deprecated: dt.date
    sunset: dt.date | None = None
    successor_version: str | None = None
    successor_url: str | None = None


class Classification(BaseModel):
    label: int
    probabilities: list[float]


class ClassifyPrediction(BaseModel):
    outputs: list[Classification]
    model: ModelRef
    api_version: str
    deprecation: Deprecation | None = None


class EmbedPrediction(BaseModel):
    outputs: list[list[float]]
    """One L2-normalised vector per input text."""
    model: ModelRef
    api_version: str
    deprecation: Deprecation | None = None


PREDICTIONS: dict[str, type[BaseModel]] = {
    "classify": ClassifyPrediction,
    "embed": EmbedPrediction,
}


class JobAccepted(BaseModel):
    job_id: uuid.UUID
    status: JobStatus
    status_url: str
    deprecation: Deprecation | None = None


class JobView(BaseModel):
    job_id: uuid.UUID
    status: JobStatus
    backend: Literal["lambda", "modal"]
    model: ModelRef
    api_version: str
    inputs: int
    attempts: int
    created_at: dt.datetime
    status_url: str
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    result: Any = None
    """The outputs, or `{"url", "bytes", "expires_in_s"}` where they are too large."""
    error: str | None = None
    last_error: str | None = None
    fallback: str | None = None
    callback: dict[str, Any] | None = None


class ModelInfo(BaseModel):
    name: str
    task: str
    version: str
    description: str
    predict_url: str


class ModelList(BaseModel):
    api_version: str
    models: list[ModelInfo]
    deprecation: Deprecation | None = None


class Health(BaseModel):
    status: Literal["ok"]
    function: str
    models_loaded: list[str]


_ERRORS = {
    400: "Malformed request: the body is not JSON, or a header is invalid",
    403: "Missing or unknown API key (API Gateway), or a model the key's plan does not include",
    404: "No such model, API version or job (another tenant's job included)",
    409: "The job is no longer queued",
    413: "The request is too large for the API or for a job",
    422: "The body has the wrong shape or types; the message says where",
    429: "Throttled (Too Many Requests) or over the plan's quota (Limit Exceeded)",
    503: "The job store or queue is unavailable; try again",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the errors a route may answer, each `{"message"}`."""
    return {status: {"model": Error, "description": _ERRORS[status]} for status in statuses}


KEYED_ERRORS = (403, 429, 503)
"""What any route behind an API key may answer: API Gateway's refusals and the tenant
lookup's outage."""


def _rows() -> dict[str, Any]:
    number = {"type": "number", "minimum": -FLOAT32_MAX, "maximum": FLOAT32_MAX}
    return {"type": "array", "items": number, "description": "One row of features"}


def _texts() -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "pattern": r"\S", "description": "A text"}


INPUT_SCHEMAS = {"classify": _rows, "embed": _texts}
"""One input of each task, as the runtime's input checks accept it."""


def _inputs(task: str) -> dict[str, Any]:
    return {"type": "array", "minItems": 1, "items": INPUT_SCHEMAS[task]()}


def predict_body(task: str) -> dict[str, Any]:
    return _json_body(
        {"type": "object", "required": ["inputs"], "properties": {"inputs": _inputs(task)}}
    )


def submit_body(tasks: Mapping[str, str]) -> dict[str, Any]:
    """A job of any model the API version serves (`tasks`: model -> task); its inputs are
    that model's."""
    callback_url = {
        "type": "string",
        "format": "uri",
        "maxLength": MAX_URL_LENGTH,
        "description": "https URL (port 443, a public host) that gets the finished job in a "
        "signed POST, at least once",
    }
    return _json_body(
        {
            "oneOf": [
                {
                    "type": "object",
                    "required": ["model", "inputs"],
                    "additionalProperties": False,
                    "properties": {
                        "model": {"const": model},
                        "inputs": _inputs(task),
                        "callback_url": callback_url,
                    },
                }
                for model, task in tasks.items()
            ]
        }
    )


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


_HEADERS: dict[str, dict[str, Any]] = {
    "x-request-id": {
        "description": "The request's id, as in the API's and the functions' logs",
        "required": True,
    },
    "x-model-version": {"description": "The version of the model that answered", "required": True},
    "location": {"description": "The job's status URL", "required": True},
    "deprecation": {"description": "The API version is deprecated (RFC 9745): @<epoch>"},
    "sunset": {"description": "When the deprecated API version goes away (RFC 8594)"},
    "link": {"description": 'The same resource in the successor version: rel="successor-version"'},
}
LIFECYCLE_HEADERS = ("deprecation", "sunset", "link")
"""What an answer from a deprecated API version adds (functions.api.versioning)."""


def answer(model: type[BaseModel], *headers: str, **extra: Any) -> dict[str, Any]:
    """An OpenAPI `responses` entry for a successful answer: its body and its headers."""
    described = {
        name: {**_HEADERS[name], "schema": {"type": "string"}}
        for name in ("x-request-id", *headers)
    }
    return {"model": model, "headers": described, **extra}


IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "The same key from the same tenant is the same job: a retry is replayed",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}

JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "format": "uuid"},
}


def job_links(api_version: str) -> dict[str, Any]:
    """The links from a job's 202 to the routes that follow and cancel it."""
    parameters = {"job_id": "$response.body#/job_id"}
    return {
        "GetJob": {"operationId": f"get_job_{api_version}", "parameters": parameters},
        "CancelJob": {"operationId": f"cancel_job_{api_version}", "parameters": parameters},
    }
