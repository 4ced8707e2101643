"""The callbacks queue: encrypted, TLS only, redriven to its dead-letter queue after the
declared callback attempts; the worker's alias reads it as a second event source, a few
invocations at most, and the worker alone may queue callbacks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_cdk.assertions import Match

from functions.runtime.callback_queue import BATCH_SIZE, MAX_CONCURRENCY

if TYPE_CHECKING:
    from stratoserve.declaration import Declaration
    from tests.integration.infra_cdk.conftest import Synth


def _logical_id(synth: Synth, name: str) -> str:
    (found,) = [
        logical_id
        for logical_id, queue in synth.resources("AWS::SQS::Queue").items()
        if queue["Properties"].get("QueueName") == name
    ]
    return found


def test_queue_and_dead_letter_queue(prod: Synth, declaration: Declaration) -> None:
    queues = {
        queue["Properties"]["QueueName"]: queue["Properties"]
        for queue in prod.resources("AWS::SQS::Queue").values()
    }
    callbacks, dead = queues["stratoserve-callbacks"], queues["stratoserve-callbacks-dlq"]

    assert callbacks["VisibilityTimeout"] == declaration.visibility_timeout_s()
    assert callbacks["RedrivePolicy"] == {
        "deadLetterTargetArn": {
            "Fn::GetAtt": [_logical_id(prod, "stratoserve-callbacks-dlq"), "Arn"]
        },
        "maxReceiveCount": declaration.jobs.callback_attempts,
    }
    assert callbacks["MessageRetentionPeriod"] == declaration.jobs.ttl_days * 86_400
    assert dead["MessageRetentionPeriod"] == 14 * 86_400
    for queue in (callbacks, dead):
        assert queue["SqsManagedSseEnabled"] is True


def test_both_queues_refuse_requests_without_tls(prod: Synth) -> None:
    for name in ("stratoserve-callbacks", "stratoserve-callbacks-dlq"):
        prod.template.has_resource_properties(
            "AWS::SQS::QueuePolicy",
            {
                "Queues": [{"Ref": _logical_id(prod, name)}],
                "PolicyDocument": {
                    "Statement": [
                        Match.object_like(
                            {
                                "Effect": "Deny",
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            }
                        )
                    ]
                },
            },
        )


def test_the_worker_s_alias_reads_it_a_few_invocations_at_most(prod: Synth) -> None:
    queue = _logical_id(prod, "stratoserve-callbacks")
    (mapping,) = [
        mapping["Properties"]
        for mapping in prod.resources("AWS::Lambda::EventSourceMapping").values()
        if mapping["Properties"]["EventSourceArn"] == {"Fn::GetAtt": [queue, "Arn"]}
    ]

    assert mapping["BatchSize"] == BATCH_SIZE
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": MAX_CONCURRENCY}
    assert ":live" in str(mapping["FunctionName"])


def _statements_on(synth: Synth, logical_id: str) -> list[tuple[Any, list[Any]]]:
    return [
        (statement["Action"], policy["Properties"]["Roles"])
        for policy in synth.resources("AWS::IAM::Policy").values()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if {"Fn::GetAtt": [logical_id, "Arn"]} in _as_list(statement["Resource"])
    ]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_only_the_worker_may_use_it_and_only_as_its_code_does(prod: Synth) -> None:
    queue = _logical_id(prod, "stratoserve-callbacks")
    worker_role = {
        "Ref": next(
            function["Properties"]["Role"]["Fn::GetAtt"][0]
            for function in prod.resources("AWS::Lambda::Function").values()
            if function["Properties"].get("FunctionName") == "stratoserve-worker"
        )
    }
    statements = _statements_on(prod, queue)

    assert statements
    actions: set[str] = set()
    for action, roles in statements:
        assert roles == [worker_role]
        actions.update(_as_list(action))
    assert actions == {
        "sqs:SendMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:GetQueueUrl",
    }
    (worker,) = [
        function["Properties"]
        for function in prod.resources("AWS::Lambda::Function").values()
        if function["Properties"].get("FunctionName") == "stratoserve-worker"
    ]
    assert worker["Environment"]["Variables"]["STRATOSERVE_CALLBACKS_QUEUE_URL"] == {"Ref": queue}
