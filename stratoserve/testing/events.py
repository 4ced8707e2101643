"""SAM-shaped sample events for the declaration's functions, for tests that call a handler
the way Lambda does (`handler(event, context)`), without a gateway or a queue.

They are built by the code the local stack uses for its own invocations, so they are what
the functions see there and on AWS: API Gateway REST proxy events by the local gateway's
`rest_proxy_event` (resource and path parameters from the declaration's route table), SQS
events by the local event source mapping's `sqs_record` around job messages, and the
EventBridge events of the declared schedules.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
import uuid
from typing import TYPE_CHECKING, Any

from functions.runtime.job_queue import CORRELATION_ATTRIBUTE
from functions.runtime.jobs import JobMessage
from functions.runtime.warmup import warmup_event
from functions.worker.sweep import SWEEP_EVENT
from stratoserve.declaration.routes import RouteTable
from stratoserve.jobs import resource_names
from stratoserve.local.aws import REGION
from stratoserve.local.events import LOCAL_ACCOUNT, Caller, rest_proxy_event
from stratoserve.local.poller import sqs_record
from stratoserve.local.runtime_interface import LocalLambdaContext

if TYPE_CHECKING:
    from stratoserve.declaration import Declaration

TEST_KEY_ID = "test-key-id"
"""The API key id an API event carries unless told otherwise: give the runtime's tenant
registry this id, or pass the `key_id` of a key the local stack issued."""
TEST_TENANT = "test-tenant"


class SampleEvents:
    """Events for `declaration`'s routes, queue and schedules.

    def test_predict_handler(stratoserve_events):
        event = stratoserve_events.predict("digits", [[0.0] * 64])
        assert event["resource"] == "/v2/predict/digits"
        assert event["requestContext"]["identity"]["apiKeyId"] == "test-key-id"
    """

    def __init__(self, declaration: Declaration, *, stage: str = "local") -> None:
        """`stage`: the requestContext's stage ("local" as `stratoserve dev` sends it; the
        deployed stage, e.g. "prod", to look like API Gateway's)."""
        self.declaration = declaration
        self.stage = stage
        self._routes = RouteTable.from_declaration(declaration)

    @property
    def newest_api_version(self) -> str:
        return max(self.declaration.api, key=lambda version: int(version[1:]))

    def api(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
        key_id: str | None = TEST_KEY_ID,
        api_key: str | None = None,
        source_ip: str = "127.0.0.1",
    ) -> dict[str, Any]:
        """An API Gateway REST proxy event for `method path`: `body` is sent as JSON (bytes
        and str as they are), `key_id` is what API Gateway puts in
        requestContext.identity.apiKeyId (None: a keyless route, such as GET /health).
        A route the declaration does not have is a ValueError."""
        match = self._routes.match(method, path)
        if match is None:
            raise ValueError(f"{method} {path}: no such route in the declaration")
        raw = _body(body)
        sent = {"host": "localhost", "user-agent": "stratoserve-testing"}
        if raw:
            sent["content-type"] = "application/json"
        if api_key is not None:
            sent["x-api-key"] = api_key
        sent.update({name.lower(): value for name, value in (headers or {}).items()})
        return rest_proxy_event(
            method=method,
            path=path,
            query=list((query or {}).items()),
            headers=list(sent.items()),
            body=raw,
            resource=match.route.resource,
            path_parameters=match.path_parameters,
            caller=Caller(source_ip=source_ip, api_key=api_key, api_key_id=key_id),
            stage=self.stage,
            request_id=str(uuid.uuid4()),
        )

    def predict(
        self,
        model: str,
        inputs: list[Any],
        *,
        api_version: str | None = None,
        key_id: str | None = TEST_KEY_ID,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """POST /{v}/predict/{model} with {"inputs": inputs} (the newest API version by
        default)."""
        version = api_version or self.newest_api_version
        return self.api(
            "POST",
            f"/{version}/predict/{model}",
            {"inputs": inputs},
            key_id=key_id,
            headers=headers,
        )

    def job_message(
        self,
        model: str,
        inputs: list[Any],
        *,
        tenant: str = TEST_TENANT,
        job_id: str | None = None,
        version: str | None = None,
    ) -> JobMessage:
        """The message the API queues for a job (the version the newest API version
        serves, unless given)."""
        return JobMessage(
            tenant=tenant,
            job_id=job_id or uuid.uuid4().hex,
            model=model,
            version=version or self.declaration.served_version(self.newest_api_version, model),
            correlation_id=str(uuid.uuid4()),
            inputs=inputs,
        )

    def sqs(self, *messages: JobMessage | str, receive_count: int = 1) -> dict[str, Any]:
        """The SQS event the jobs queue's event source mapping hands the worker: one record
        per message (a JobMessage, or a raw body), each `receive_count` times delivered."""
        queue_arn = (
            f"arn:aws:sqs:{REGION}:{LOCAL_ACCOUNT}:{resource_names(self.declaration)['queue']}"
        )
        return {
            "Records": [
                sqs_record(_received(message, receive_count), queue_arn, REGION)
                for message in messages
            ]
        }

    def scheduled(self, rule: str = "ExampleRule", detail: Any = None) -> dict[str, Any]:
        """EventBridge's Scheduled Event, as a rule without a constant input sends it
        (`sam local generate-event cloudwatch scheduled-event`)."""
        return {
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": LOCAL_ACCOUNT,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "region": REGION,
            "resources": [f"arn:aws:events:{REGION}:{LOCAL_ACCOUNT}:rule/{rule}"],
            "detail": {} if detail is None else detail,
        }

    def warmup(self, function: str) -> dict[str, Any]:
        """What the function's declared warm-up rule sends it (its constant input replaces
        the scheduled event); a function without `warmup` is a LookupError."""
        spec = self.declaration.functions.get(function)
        if spec is None or spec.warmup is None:
            raise LookupError(f"function {function!r} declares no warmup")
        return warmup_event(spec.warmup.concurrency)

    def sweep(self) -> dict[str, Any]:
        """What the jobs sweep's rule (`jobs.sweep_schedule`) sends the worker."""
        return copy.deepcopy(SWEEP_EVENT)

    def context(self, *, timeout_s: float = 30.0) -> LocalLambdaContext:
        """A Lambda context object for a handler called directly (the one local execution
        environments pass: function name, memory, ARN, request id, remaining time)."""
        return LocalLambdaContext(str(uuid.uuid4()), int((time.time() + timeout_s) * 1000))


def _body(body: Any) -> bytes:
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body).encode()


def _received(message: JobMessage | str, receive_count: int) -> dict[str, Any]:
    """The message as ReceiveMessage returns it (attributes included)."""
    body = message if isinstance(message, str) else message.encode().decode()
    now_ms = str(int(time.time() * 1000))
    received: dict[str, Any] = {
        "MessageId": str(uuid.uuid4()),
        "ReceiptHandle": uuid.uuid4().hex,
        "MD5OfBody": hashlib.md5(body.encode(), usedforsecurity=False).hexdigest(),
        "Body": body,
        "Attributes": {
            "ApproximateReceiveCount": str(receive_count),
            "SentTimestamp": now_ms,
            "SenderId": LOCAL_ACCOUNT,
            "ApproximateFirstReceiveTimestamp": now_ms,
        },
    }
    if isinstance(message, JobMessage):
        received["MessageAttributes"] = {
            CORRELATION_ATTRIBUTE: {"DataType": "String", "StringValue": message.correlation_id}
        }
    return received
