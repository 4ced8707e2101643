"""The dashboard shows what an operator needs, and every alarm reaches the encrypted topic."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from functions.runtime.observability import job_outcome_metrics

if TYPE_CHECKING:
    from stratoserve.declaration import Declaration
    from tests.integration.infra_cdk.conftest import Synth


def _widgets(synth: Synth) -> list[dict[str, Any]]:
    """The dashboard's widgets, with CloudFormation references read as "TOKEN"."""
    (dashboard,) = synth.resources("AWS::CloudWatch::Dashboard").values()
    parts = dashboard["Properties"]["DashboardBody"]["Fn::Join"][1]
    body = "".join(part if isinstance(part, str) else "TOKEN" for part in parts)
    widgets: list[dict[str, Any]] = json.loads(body)["widgets"]
    return widgets


def _metrics(widget: dict[str, Any]) -> list[list[Any]]:
    metrics: list[list[Any]] = widget.get("properties", {}).get("metrics", [])
    return metrics


def _dimensions(entry: list[Any]) -> dict[str, str]:
    """[namespace, metric, name, value, name, value, ..., {options}] -> the dimensions."""
    names = [item for item in entry[2:] if isinstance(item, str)]
    return dict(zip(names[::2], names[1::2], strict=True))


def test_the_dashboard_covers_requests_models_cold_starts_queues_and_jobs(
    prod: Synth, declaration: Declaration
) -> None:
    widgets = {widget["properties"]["title"]: widget for widget in _widgets(prod)}
    named = {
        title: {entry[1] for entry in _metrics(widget) if len(entry) > 1}
        for title, widget in widgets.items()
    }
    assert {"Count", "4XXError", "5XXError"} <= named["Requests"]
    assert named["Cold starts"] == {"ColdStart"}
    assert {"Throttles", "Errors"} <= named["Throttles and errors"]
    assert {"ApproximateNumberOfMessagesVisible", "ApproximateAgeOfOldestMessage"} <= named[
        "Jobs queue: depth and oldest message (s)"
    ]
    outcomes = [_dimensions(entry) for entry in _metrics(widgets["Job outcomes per backend"])]
    assert {(entry["backend"], entry["outcome"]) for entry in outcomes} >= {
        ("modal", "succeeded"),
        ("modal", "failed"),
        ("modal", "fallback"),
        ("lambda", "succeeded"),
    }
    latency = json.dumps(widgets["Predict latency per model (p50, p99)"])
    for api_version, spec in declaration.api.items():
        for model in spec.models:
            assert f"/{api_version}/predict/{model}" in latency
    assert '"p50"' in latency and '"p99"' in latency
    assert "Alarms" in widgets


def test_every_alarm_publishes_to_the_encrypted_topic(
    prod: Synth, declaration: Declaration
) -> None:
    (topic_id, topic), *_ = prod.resources("AWS::SNS::Topic").items()
    assert "KmsMasterKeyId" in topic["Properties"]
    alarms: dict[str, Any] = prod.resources("AWS::CloudWatch::Alarm")
    routes = sum(len(spec.models) for spec in declaration.api.values())
    functions = len(declaration.functions)
    # 5XX rate, p99 per predict route, throttles and error rate per function, job age,
    # dead letters (jobs and callbacks), stuck jobs.
    assert len(alarms) == 1 + routes + 2 * functions + 4
    for alarm in alarms.values():
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": topic_id}]
    descriptions = " ".join(alarm["Properties"]["AlarmDescription"] for alarm in alarms.values())
    for phrase in (
        "5XX",
        "p99 latency",
        "throttled",
        "dead-letter",
        "oldest queued job",
        "stuck",
        "callbacks dead-letter",
    ):
        assert phrase in descriptions, phrase


def test_cloudwatch_may_use_the_topics_key(prod: Synth) -> None:
    (key,) = prod.resources("AWS::KMS::Key").values()
    assert key["Properties"]["EnableKeyRotation"] is True
    statements = key["Properties"]["KeyPolicy"]["Statement"]
    assert any(
        statement.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}
        for statement in statements
    )


def test_the_dashboard_reads_what_the_runtime_writes(prod: Synth) -> None:
    """Namespace and dimensions as the functions emit them (EMF): the namespace and the
    service the stack gives the functions, the dimension names of the runtime's metrics."""
    worker = next(
        function["Properties"]["Environment"]["Variables"]
        for function in prod.resources("AWS::Lambda::Function").values()
        if function["Properties"].get("FunctionName") == "stratoserve-worker"
    )
    emitted = job_outcome_metrics("modal", "fallback")["_aws"]["CloudWatchMetrics"][0]
    widgets = {widget["properties"]["title"]: widget for widget in _widgets(prod)}
    for entry in _metrics(widgets["Job outcomes per backend"]):
        assert entry[0] == worker["POWERTOOLS_METRICS_NAMESPACE"]
        assert entry[1] == emitted["Metrics"][0]["Name"]
        dimensions = _dimensions(entry)
        assert set(dimensions) == set(emitted["Dimensions"][0])
        assert dimensions["service"] == worker["POWERTOOLS_SERVICE_NAME"]
    for entry in _metrics(widgets["Cold starts"]):
        assert entry[0] == worker["POWERTOOLS_METRICS_NAMESPACE"]
        # record_cold_start's dimensions (functions/runtime/observability.py).
        assert set(_dimensions(entry)) == {"service", "function_name"}
        assert _dimensions(entry)["service"] == worker["POWERTOOLS_SERVICE_NAME"]


def test_stuck_jobs_alarm_on_what_the_job_store_s_reads_write(prod: Synth) -> None:
    from functions.runtime.observability import stuck_job_metrics

    fields = stuck_job_metrics("job-1", 0)
    (directive,) = fields["_aws"]["CloudWatchMetrics"]
    alarms = [
        alarm["Properties"]
        for alarm in prod.resources("AWS::CloudWatch::Alarm").values()
        if alarm["Properties"].get("MetricName") == "StuckJobs"
    ]
    (alarm,) = alarms
    assert alarm["Namespace"] == directive["Namespace"] == "stratoserve"
    assert [dimension["Name"] for dimension in alarm["Dimensions"]] in directive["Dimensions"]
    assert alarm["Threshold"] == 0
    assert fields["stuck"] == "unclaimed" and fields["StuckJobs"] == 1
