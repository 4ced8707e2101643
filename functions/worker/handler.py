"""The worker's Lambda entry point (SQS event source, ReportBatchItemFailures): adapters
only. Import time is the init phase: the environment loads every model jobs may use."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)

from functions.runtime.environment import get_environment
from functions.runtime.observability import logger, record_cold_start
from functions.runtime.warmup import warm_if_asked
from functions.worker.batch import JobWorker

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
    from aws_lambda_powertools.utilities.typing import LambdaContext

environment = get_environment()
record_cold_start(environment.function_name)
# Every record failing is still a partial answer (all of them listed), not an invocation
# error: the records come back one by one, each with its own backoff.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
worker = JobWorker(
    environment,
    jobs=lambda: environment.jobs,
    callbacks=environment.callback_sender(),
    gpu=environment.gpu_backend,
)


class RecordFailed(Exception):
    """Raised for Powertools: this record goes back to the queue."""


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    cold_start, environment.cold_start = environment.cold_start, False
    if (answer := warm_if_asked(environment, event, context, cold_start=cold_start)) is not None:
        logger.info("warm-up", extra=answer)
        return answer
    deadline = time.monotonic() + context.get_remaining_time_in_millis() / 1000
    failures = worker.process(event.get("Records", []), deadline=deadline)

    def record_handler(record: SQSRecord) -> None:
        if record.message_id in failures:
            raise RecordFailed(failures[record.message_id])

    return dict(
        process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
    )
