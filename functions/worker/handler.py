"""The worker's Lambda entry point (SQS event sources, ReportBatchItemFailures): adapters
only. Import time is the init phase: the environment loads every model jobs may use.

Two queues feed it: the jobs queue (functions/worker/batch.py) and the callbacks queue
(functions/worker/callbacks.py); each record goes by the queue it came from. A schedule
also sends it the stuck-jobs sweep (functions/worker/sweep.py)."""

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
from functions.worker.callbacks import CallbackWorker
from functions.worker.sweep import sweep_if_asked

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
    from aws_lambda_powertools.utilities.typing import LambdaContext

environment = get_environment()
record_cold_start(environment.function_name)
# Every record failing is still a partial answer (all of them listed), not an invocation
# error: the records come back one by one, each with its own backoff.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
callback_queue = (
    (lambda: environment.callback_queue) if environment.settings.callbacks_queue_url else None
)
worker = JobWorker(
    environment,
    jobs=lambda: environment.jobs,
    callbacks=callback_queue,
    gpu=environment.gpu_backend,
)
callbacks = CallbackWorker(
    jobs=lambda: environment.jobs,
    queue=callback_queue,
    sender=environment.callback_sender(),
    attempts=environment.declaration.jobs.callback_attempts,
    retry_delay_s=environment.declaration.jobs.retry_delay_s,
    max_delay_s=environment.declaration.visibility_timeout_s(),
)


class RecordFailed(Exception):
    """Raised for Powertools: this record goes back to the queue."""


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    cold_start, environment.cold_start = environment.cold_start, False
    if (answer := warm_if_asked(environment, event, context, cold_start=cold_start)) is not None:
        logger.info("warm-up", extra=answer)
        return answer
    answer = sweep_if_asked(
        lambda: environment.jobs.store,
        event,
        callbacks=callback_queue,
        callback_grace_s=environment.declaration.visibility_timeout_s(),
    )
    if answer is not None:
        logger.info("stuck-jobs sweep", extra=answer)
        return answer
    deadline = time.monotonic() + context.get_remaining_time_in_millis() / 1000
    calls, jobs = callbacks.split(event.get("Records", []))
    failures = {
        **(worker.process(jobs, deadline=deadline) if jobs else {}),
        **callbacks.process(calls, deadline=deadline),
    }

    def record_handler(record: SQSRecord) -> None:
        if record.message_id in failures:
            raise RecordFailed(failures[record.message_id])

    return dict(
        process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
    )
