"""The jobs queue: encrypted, TLS only, redriven to its dead-letter queue after the
declared deliveries, hidden 6x the worker's timeout; the worker's alias reads it in
batches and reports partial failures."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_cdk.assertions import Match

from stratoserve.declaration.schema import CALLBACKS_MAX_CONCURRENCY

if TYPE_CHECKING:
    from stratoserve.declaration import Declaration
    from tests.integration.infra_cdk.conftest import Synth


def test_queue_and_dead_letter_queue(prod: Synth, declaration: Declaration) -> None:
    queues = prod.resources("AWS::SQS::Queue")
    by_name = {queue["Properties"]["QueueName"]: queue["Properties"] for queue in queues.values()}
    jobs, dead = by_name["stratoserve-jobs"], by_name["stratoserve-jobs-dlq"]
    assert jobs["VisibilityTimeout"] == declaration.visibility_timeout_s() == 1080
    assert jobs["RedrivePolicy"]["maxReceiveCount"] == declaration.jobs.max_receive_count
    assert jobs["MessageRetentionPeriod"] == declaration.jobs.ttl_days * 86_400
    assert dead["MessageRetentionPeriod"] == 14 * 86_400
    for queue in (jobs, dead):
        assert queue["SqsManagedSseEnabled"] is True
    # TLS only: a policy on each queue (these two, the callbacks queue and its DLQ) denies
    # requests without it.
    policies = prod.resources("AWS::SQS::QueuePolicy")
    assert len(policies) == 4
    for policy in policies.values():
        (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
        assert statement["Effect"] == "Deny"
        assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def _jobs_mapping(prod: Synth) -> dict[str, Any]:
    """The worker's event source mapping on the jobs queue (the other is the callbacks')."""
    (jobs,) = [
        logical_id
        for logical_id, queue in prod.resources("AWS::SQS::Queue").items()
        if queue["Properties"]["QueueName"] == "stratoserve-jobs"
    ]
    (mapping,) = [
        mapping
        for mapping in prod.resources("AWS::Lambda::EventSourceMapping").values()
        if mapping["Properties"]["EventSourceArn"] == {"Fn::GetAtt": [jobs, "Arn"]}
    ]
    return mapping


def test_the_worker_reads_it_in_batches_with_partial_failures(
    prod: Synth, declaration: Declaration
) -> None:
    prod.template.has_resource_properties(
        "AWS::Lambda::EventSourceMapping",
        {
            "BatchSize": declaration.jobs.batch_size,
            "MaximumBatchingWindowInSeconds": declaration.jobs.batching_window_s,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "FunctionName": Match.object_like({"Fn::Join": Match.any_value()}),
        },
    )
    mapping = _jobs_mapping(prod)
    # On the worker's live alias (a canary of the worker takes a share of the batches).
    assert ":live" in str(mapping["Properties"]["FunctionName"])


def test_the_worker_runs_at_most_its_reserved_concurrency_of_batches(
    prod: Synth, declaration: Declaration
) -> None:
    mapping = _jobs_mapping(prod)
    maximum = mapping["Properties"]["ScalingConfig"]["MaximumConcurrency"]
    assert maximum == declaration.jobs_max_concurrency()
    # The callbacks queue's mapping runs beside it, within the same reservation.
    reserved = declaration.functions["worker"].reserved_concurrency or 0
    assert 2 <= maximum <= reserved - CALLBACKS_MAX_CONCURRENCY
