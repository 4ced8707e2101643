"""The Lambda entry point of every HTTP-facing function: adapters only.

Import time is Lambda's init phase: the environment (declaration + preloaded models) is
built here, once, before the first request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mangum import Mangum

from functions.api.app import create_app
from functions.runtime.environment import get_environment
from functions.runtime.observability import logger, record_cold_start
from functions.runtime.warmup import warm_if_asked

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

environment = get_environment()
record_cold_start(environment.function_name)
asgi_handler = Mangum(create_app(environment.declaration), lifespan="off")


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    cold_start, environment.cold_start = environment.cold_start, False
    if (answer := warm_if_asked(environment, event, context, cold_start=cold_start)) is not None:
        logger.info("warm-up", extra=answer)
        return answer
    # Powertools and Mangum each type the same Lambda context object their own way.
    response: dict[str, Any] = asgi_handler(event, context)  # type: ignore[arg-type]
    return response
