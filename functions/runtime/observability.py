"""Structured logs and metrics shared by every function: Powertools Logger (JSON lines)
and Metrics (CloudWatch embedded metric format, also JSON lines on stdout)."""

from __future__ import annotations

import os
import time
from typing import Any

import orjson
from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from functions.runtime.snapstart import after_restore
from stratoserve.declaration import function_environment as variables


def _serialize(record: Any) -> str:
    # orjson halves the cost of a log line (~80 -> ~45 us), paid on every request.
    return orjson.dumps(record, default=str).decode()


SERVICE = os.environ.get(variables.POWERTOOLS_SERVICE_NAME, "stratoserve")
NAMESPACE = os.environ.get(variables.POWERTOOLS_METRICS_NAMESPACE, "stratoserve")

# Powertools reads POWERTOOLS_SERVICE_NAME / POWERTOOLS_LOG_LEVEL itself; the defaults
# keep local runs and tests readable without any environment set.

logger = Logger(service=SERVICE, json_serializer=_serialize)


def prediction_metrics(
    model: str, version: str, model_ms: float, tenant: str | None
) -> dict[str, Any]:
    """The request's metrics in CloudWatch's embedded metric format, as fields of the
    request's own log line: one JSON line per request carries both, so a metric costs no
    second line and no second serialisation. The tenant rides along as a property, not a
    dimension: one metric series per tenant would cost per series."""
    fields: dict[str, Any] = {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": NAMESPACE,
                    "Dimensions": [["service", "model", "version"]],
                    "Metrics": [
                        {"Name": "Predictions", "Unit": "Count"},
                        {"Name": "ModelTime", "Unit": "Milliseconds"},
                    ],
                }
            ],
        },
        "model": model,
        "version": version,
        "Predictions": 1,
        "ModelTime": round(model_ms, 3),
    }
    if tenant is not None:
        fields["tenant"] = tenant
    return fields


def job_outcome_metrics(backend: str, outcome: str) -> dict[str, Any]:
    """A job settling (succeeded, failed) or leaving the GPU for the CPU worker (fallback),
    as EMF fields of the worker's log line about it: the dashboard's job outcomes per
    backend (lambda or modal)."""
    return {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": NAMESPACE,
                    "Dimensions": [["service", "backend", "outcome"]],
                    "Metrics": [{"Name": "JobOutcomes", "Unit": "Count"}],
                }
            ],
        },
        # "service" is in every line already: the logger's own key.
        "backend": backend,
        "outcome": outcome,
        "JobOutcomes": 1,
    }


def stuck_job_metrics(job_id: str, attempts: int) -> dict[str, Any]:
    """A job that a read found stuck and settled as failed (the job store's on_settled):
    never claimed (no attempts: its message never reached a worker) or abandoned (its last
    delivery died). The StuckJobs alarm watches the per-service series."""
    return {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": NAMESPACE,
                    "Dimensions": [["service"], ["service", "stuck"]],
                    "Metrics": [{"Name": "StuckJobs", "Unit": "Count"}],
                }
            ],
        },
        "job_id": job_id,
        "stuck": "unclaimed" if attempts == 0 else "abandoned",
        "StuckJobs": 1,
    }


def record_model_load(model: str, version: str, load_ms: float) -> None:
    # At init, outside any invocation: written at once, with its own dimensions.
    with single_metric(
        name="ModelLoadTime",
        unit=MetricUnit.Milliseconds,
        value=load_ms,
        namespace=NAMESPACE,
    ) as metric:
        metric.add_dimension(name="service", value=SERVICE)
        metric.add_dimension(name="model", value=model)
        metric.add_dimension(name="version", value=version)


def record_cold_start(function: str) -> None:
    """One per execution environment, written at init: the cold starts of a function. An
    environment provisioned ahead of traffic is not one (no request waited for it); with
    SnapStart, init runs once for the snapshot, and each restore is one."""
    if os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE") == "provisioned-concurrency":
        return
    if after_restore(lambda: _write_cold_start(function)):
        return
    _write_cold_start(function)


def _write_cold_start(function: str) -> None:
    with single_metric(
        name="ColdStart", unit=MetricUnit.Count, value=1, namespace=NAMESPACE
    ) as metric:
        metric.add_dimension(name="service", value=SERVICE)
        metric.add_dimension(name="function_name", value=function)
