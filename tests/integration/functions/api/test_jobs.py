"""The jobs routes through Lambda's path (a REST proxy event through Mangum), with the job
store and queue in a real moto server: 202 with a job, tenant-scoped reads, idempotency,
cancellation, callback URLs, and predict requests too big for the inline path."""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from mangum import Mangum

from functions.api.app import create_app
from functions.api.dependencies import current_environment
from functions.runtime.callbacks import resolve_host
from functions.runtime.environment import ExecutionEnvironment, Settings
from functions.runtime.job_queue import CORRELATION_ATTRIBUTE
from functions.runtime.job_service import INLINE_INPUTS_MAX_BYTES
from functions.runtime.jobs import JobMessage
from functions.runtime.tenants import TenantDirectory
from stratoserve.declaration import function_environment as variables
from stratoserve.jobs import create_job_resources, resource_names
from stratoserve.keys import KeyService
from stratoserve.local.aws import LocalAws, client, function_environment
from stratoserve.tenants import TenantRegistry
from tests.conftest import DECLARATION_FILE, rest_event
from tests.integration.stratoserve.moto import drain, reset_moto

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from stratoserve.declaration import Declaration
    from stratoserve.jobs import JobResources

Response = tuple[int, dict[str, str], Any]
NOT_PRIVATE = '"callback_url" must not point at a private, loopback or link-local address'


class Context:
    function_name = "test"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:test"
    aws_request_id = "test-request"

    def get_remaining_time_in_millis(self) -> int:
        return 10_000


class Stack:
    """The moto server's endpoint, the job resources, the key service, and the tenants'
    API key ids and tenant ids (jobs are stored by tenant id)."""

    def __init__(self, url: str, resources: JobResources, service: KeyService) -> None:
        self.url = url
        self.resources = resources
        self.service = service
        self.keys: dict[str, str] = {}
        self.tenant_ids: dict[str, str] = {}
        self.sqs = client("sqs", url)

    def issue(self, tenant: str, plan: str) -> None:
        issued = self.service.create(tenant, plan)
        self.keys[tenant], self.tenant_ids[tenant] = issued.key_id, issued.tenant_id

    def drain(self) -> list[dict[str, Any]]:
        """Every message on the jobs queue, removed from it."""
        return drain(self.sqs, self.resources.queue_url)


@pytest.fixture(scope="module")
def stack(declaration: Declaration) -> Iterator[Stack]:
    aws = LocalAws()
    url = aws.start()
    with pytest.MonkeyPatch.context() as patch:
        # The environments' own boto3 clients (built on first use) find moto here.
        for name, value in function_environment(url).items():
            patch.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
            patch.delenv(name, raising=False)
        try:
            resources = create_job_resources(declaration, lambda service: client(service, url))
            registry = TenantRegistry(client("dynamodb", url), resources.tenants_table)
            keys = KeyService(client("apigateway", url), project="test", registry=registry)
            keys.ensure_plans(declaration)
            stack = Stack(url, resources, keys)
            for tenant, plan in (("acme", "pro"), ("globex", "pro"), ("initech", "free")):
                stack.issue(tenant, plan)
            yield stack
        finally:
            reset_moto(url)  # moto keeps its state per process, across server instances
            aws.stop()


NAMES = {
    "example.com": ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"],
    "internal.example.com": ["93.184.215.14", "10.1.2.3"],
    "nat64.example.com": ["64:ff9b::a9fe:a9fe"],
}
"""What callback hosts resolve to here (this machine may have no DNS)."""


def _resolve(host: str) -> list[str]:
    if host in NAMES:
        return NAMES[host]
    return resolve_host(host)


def _environment(
    declaration: Declaration, function: str, settings: Settings, url: str
) -> ExecutionEnvironment:
    environment = ExecutionEnvironment(
        declaration, DECLARATION_FILE, function, settings=settings, resolve=_resolve
    )
    environment.tenants = TenantDirectory(
        resource_names(declaration)["tenants_table"], lambda: client("dynamodb", url)
    )
    return environment


def _handler(environment: ExecutionEnvironment) -> Callable[[dict[str, Any]], Response]:
    async def provide() -> ExecutionEnvironment:
        return environment

    app = create_app(environment.declaration)
    app.dependency_overrides[current_environment] = provide
    handler = Mangum(app, lifespan="off")

    def call(event: dict[str, Any]) -> Response:
        result = handler(event, Context())
        body = json.loads(result["body"]) if result["body"] else None
        return result["statusCode"], result["headers"], body

    return call


def _invoker(
    stack: Stack, declaration: Declaration, *, local_stack: bool
) -> Callable[..., Response]:
    """Invoke function `name` (api or embed) as `tenant`, with the jobs path set up."""
    settings = Settings(
        jobs_table=stack.resources.table,
        jobs_bucket=stack.resources.bucket,
        jobs_queue_url=stack.resources.queue_url,
        tenants_table=stack.resources.tenants_table,
        local_stack=local_stack,
    )
    handlers = {
        name: _handler(_environment(declaration, name, settings, stack.url))
        for name in ("api", "embed")
    }

    def call(
        name: str,
        tenant: str,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        request_id: str | None = None,
        raw_body: str | None = None,
    ) -> Response:
        event = rest_event(method, path, body, raw_body=raw_body)
        event["requestContext"]["identity"]["apiKeyId"] = stack.keys[tenant]
        event["requestContext"]["requestId"] = request_id or str(uuid.uuid4())
        for header, value in (headers or {}).items():
            event["headers"][header] = value
            event["multiValueHeaders"][header] = [value]
        return handlers[name](event)

    return call


@pytest.fixture(scope="module")
def invoke(stack: Stack, declaration: Declaration) -> Callable[..., Response]:
    """As in `stratoserve dev`: callbacks may go to http://localhost."""
    return _invoker(stack, declaration, local_stack=True)


@pytest.fixture(scope="module")
def invoke_deployed(stack: Stack, declaration: Declaration) -> Callable[..., Response]:
    """As on AWS: callbacks only to https and public hosts."""
    return _invoker(stack, declaration, local_stack=False)


@pytest.fixture(autouse=True)
def empty_queue(stack: Stack) -> None:
    stack.drain()


def _submit(invoke: Callable[..., Response], body: Any, **options: Any) -> Response:
    return invoke("api", options.pop("tenant", "acme"), "POST", "/v2/jobs", body, **options)


# -- submit ----------------------------------------------------------------------------


def test_a_job_is_answered_202_and_its_message_is_on_the_queue(
    invoke: Callable[..., Response], stack: Stack
) -> None:
    request_id = str(uuid.uuid4())

    status, headers, body = _submit(
        invoke, {"model": "embed", "inputs": ["a", "b"]}, request_id=request_id
    )

    assert status == 202
    assert set(body) == {"job_id", "status", "status_url"}
    job_id = body["job_id"]
    assert body["status"] == "queued"
    assert body["status_url"] == f"/prod/v2/jobs/{job_id}"
    assert headers["location"] == body["status_url"]
    assert headers["x-request-id"] == request_id
    assert "idempotent-replayed" not in headers

    (message,) = stack.drain()
    decoded = JobMessage.decode(message["Body"])
    assert decoded == JobMessage(
        tenant=stack.tenant_ids["acme"],
        job_id=job_id,
        model="embed",
        version="2",
        correlation_id=request_id,
        inputs=["a", "b"],
    )
    assert message["MessageAttributes"][CORRELATION_ATTRIBUTE]["StringValue"] == request_id


def test_large_inputs_travel_through_the_bucket(
    invoke: Callable[..., Response], stack: Stack, declaration: Declaration
) -> None:
    count = declaration.routing_for("embed").job_max_inputs
    filler = "lorem ipsum " * (INLINE_INPUTS_MAX_BYTES // count // 12 + 1)
    inputs = [f"{index:05d} {filler}" for index in range(count)]
    assert len(json.dumps(inputs)) > INLINE_INPUTS_MAX_BYTES

    submitted_after = time.time()
    status, _, body = _submit(invoke, {"model": "embed", "inputs": inputs})
    submitted_before = time.time()

    assert status == 202
    (message,) = stack.drain()
    decoded = JobMessage.decode(message["Body"])
    assert decoded.inputs is None
    assert decoded.inputs_key is not None
    # Named by the job and its creation time (in ms).
    tenant_id = stack.tenant_ids["acme"]
    named = re.fullmatch(rf"inputs/{tenant_id}/{body['job_id']}/(\d+)\.json", decoded.inputs_key)
    assert named is not None, decoded.inputs_key
    assert int(submitted_after * 1000) <= int(named[1]) <= int(submitted_before * 1000)
    stored = client("s3", stack.url).get_object(
        Bucket=stack.resources.bucket, Key=decoded.inputs_key
    )
    assert json.loads(stored["Body"].read()) == inputs


def test_a_submitted_job_shows_queued(invoke: Callable[..., Response]) -> None:
    _, _, submitted = _submit(invoke, {"model": "embed", "inputs": ["a", "b", "c"]})
    job_id = submitted["job_id"]

    status, _, job = invoke("api", "acme", "GET", f"/v2/jobs/{job_id}")

    assert status == 200
    assert job["job_id"] == job_id
    assert job["status"] == "queued"
    assert job["backend"] == "lambda"
    assert job["model"] == {"name": "embed", "version": "2"}
    assert job["api_version"] == "v2"
    assert job["inputs"] == 3
    assert job["attempts"] == 0
    assert job["status_url"] == f"/prod/v2/jobs/{job_id}"
    assert "result" not in job
    assert "error" not in job


def test_a_v1_job_is_served_by_v1_s_model_version(
    invoke: Callable[..., Response], stack: Stack
) -> None:
    status, headers, body = invoke(
        "api", "acme", "POST", "/v1/jobs", {"model": "embed", "inputs": ["a"]}
    )

    assert status == 202
    assert "deprecation" in headers, "v1 is deprecated: its jobs say so too"
    (message,) = stack.drain()
    assert JobMessage.decode(message["Body"]).version == "1"
    _, _, job = invoke("api", "acme", "GET", f"/v1/jobs/{body['job_id']}")
    assert job["model"] == {"name": "embed", "version": "1"}


def test_another_tenant_s_job_is_a_404_like_a_missing_one(
    invoke: Callable[..., Response],
) -> None:
    _, _, submitted = _submit(invoke, {"model": "embed", "inputs": ["a"]})
    job_id = submitted["job_id"]
    missing = str(uuid.uuid4())

    foreign = invoke("api", "globex", "GET", f"/v2/jobs/{job_id}")
    absent = invoke("api", "acme", "GET", f"/v2/jobs/{missing}")
    foreign_cancel = invoke("api", "globex", "DELETE", f"/v2/jobs/{job_id}")

    assert foreign[0] == absent[0] == foreign_cancel[0] == 404
    assert foreign[2] == {"message": f"no job {job_id}"}
    assert absent[2] == {"message": f"no job {missing}"}
    assert foreign_cancel[2] == foreign[2]
    _, _, still = invoke("api", "acme", "GET", f"/v2/jobs/{job_id}")
    assert still["status"] == "queued", "another tenant cannot cancel it"


# -- idempotency -----------------------------------------------------------------------


def test_the_same_idempotency_key_and_body_is_the_same_job_queued_once(
    invoke: Callable[..., Response], stack: Stack
) -> None:
    key = {"Idempotency-Key": f"order-{uuid.uuid4()}"}
    request = {"model": "embed", "inputs": ["a", "b"]}

    first = _submit(invoke, request, headers=key)
    replay = _submit(invoke, request, headers=key)

    assert first[0] == replay[0] == 202
    assert replay[2] == first[2]
    assert "idempotent-replayed" not in first[1]
    assert replay[1]["idempotent-replayed"] == "true"
    assert replay[1]["location"] == first[1]["location"]
    assert len(stack.drain()) == 1


def test_the_same_idempotency_key_with_another_body_is_a_422(
    invoke: Callable[..., Response], stack: Stack
) -> None:
    key = {"Idempotency-Key": f"order-{uuid.uuid4()}"}
    _, _, first = _submit(invoke, {"model": "embed", "inputs": ["a"]}, headers=key)

    status, _, body = _submit(invoke, {"model": "embed", "inputs": ["b"]}, headers=key)

    assert status == 422
    assert "Idempotency-Key" in body["message"]
    assert first["job_id"] in body["message"]
    assert len(stack.drain()) == 1


def test_a_name_re_issued_to_a_new_tenant_finds_none_of_the_old_jobs(
    invoke: Callable[..., Response], stack: Stack
) -> None:
    stack.issue("hooli", "pro")
    key = {"Idempotency-Key": "order-1"}
    status, _, old = _submit(
        invoke, {"model": "embed", "inputs": ["a"]}, tenant="hooli", headers=key
    )
    assert status == 202
    stack.service.revoke("hooli")
    stack.issue("hooli", "pro")  # the same name, someone else

    shown = invoke("api", "hooli", "GET", f"/v2/jobs/{old['job_id']}")
    status, _, new = _submit(
        invoke, {"model": "embed", "inputs": ["a"]}, tenant="hooli", headers=key
    )

    assert shown[0] == 404
    assert status == 202
    assert new["job_id"] != old["job_id"], "the old tenant's Idempotency-Key is not theirs"
    stack.drain()


def test_a_job_is_stamped_with_its_tenant_s_secret_version(
    invoke: Callable[..., Response], stack: Stack
) -> None:
    stack.issue("umbrella", "pro")
    stack.service.rotate_secret("umbrella")  # before the functions first see the key

    status, _, body = _submit(invoke, {"model": "embed", "inputs": ["a"]}, tenant="umbrella")

    assert status == 202
    item = client("dynamodb", stack.url).get_item(
        TableName=stack.resources.table,
        Key={"tenant": {"S": stack.tenant_ids["umbrella"]}, "job_id": {"S": body["job_id"]}},
    )["Item"]
    assert item["secret_version"] == {"N": "2"}
    stack.drain()


def test_an_idempotency_key_is_per_tenant(invoke: Callable[..., Response], stack: Stack) -> None:
    key = {"Idempotency-Key": f"order-{uuid.uuid4()}"}
    request = {"model": "embed", "inputs": ["a"]}

    _, _, ours = _submit(invoke, request, headers=key)
    status, headers, theirs = _submit(invoke, request, headers=key, tenant="globex")

    assert status == 202
    assert theirs["job_id"] != ours["job_id"]
    assert "idempotent-replayed" not in headers
    assert len(stack.drain()) == 2


def test_a_blank_idempotency_key_is_a_400(invoke: Callable[..., Response], stack: Stack) -> None:
    status, _, body = _submit(
        invoke, {"model": "embed", "inputs": ["a"]}, headers={"Idempotency-Key": "x" * 256}
    )

    assert status == 400
    assert body == {"message": "Idempotency-Key must be 1 to 255 printable characters"}
    assert stack.drain() == []


# -- what is refused -------------------------------------------------------------------


def test_bad_inputs_are_a_422_naming_the_input(
    invoke: Callable[..., Response], stack: Stack
) -> None:
    status, _, body = _submit(invoke, {"model": "embed", "inputs": ["a", 3]})

    assert status == 422
    assert body == {"message": "inputs[1]: expected a string, got a number"}
    assert stack.drain() == []


def test_a_text_over_max_text_chars_is_refused_at_submission(
    invoke: Callable[..., Response], stack: Stack, declaration: Declaration
) -> None:
    limit = declaration.models["embed"].max_text_chars
    inputs = ["ok", "ok", "ok", "a" * (limit + 1)]

    status, _, body = _submit(invoke, {"model": "embed", "inputs": inputs})

    assert status == 422
    assert body == {"message": f"inputs[3]: text longer than {limit} characters"}
    assert stack.drain() == []


@pytest.mark.parametrize(
    ("request_body", "status", "message"),
    [
        ({"model": "embed", "inputs": []}, 422, '"inputs" must not be empty'),
        ({"model": "embed", "inputs": "a"}, 422, '"inputs" must be a list'),
        ({"inputs": ["a"]}, 422, '"model" must be the name of a model'),
        ({"model": "embed", "inputs": ["a"], "priority": 1}, 422, "unknown field(s): priority"),
        (["a"], 422, 'request body must be a JSON object with "model" and "inputs"'),
    ],
    ids=["empty", "not-a-list", "no-model", "unknown-field", "not-an-object"],
)
def test_a_malformed_job_is_a_4xx_saying_what_is_wrong(
    invoke: Callable[..., Response], request_body: Any, status: int, message: str
) -> None:
    answer = _submit(invoke, request_body)

    assert answer[0] == status
    assert answer[2] == {"message": message}


def test_a_body_that_is_not_json_is_a_400(invoke: Callable[..., Response]) -> None:
    status, _, body = invoke("api", "acme", "POST", "/v2/jobs", raw_body="{not json")

    assert status == 400
    assert body["message"].startswith("request body is not valid JSON: ")


def test_an_unknown_model_is_a_404(invoke: Callable[..., Response], stack: Stack) -> None:
    status, _, body = _submit(invoke, {"model": "nope", "inputs": ["a"]})

    assert status == 404
    assert body == {"message": "unknown model nope in v2 (available: digits, embed)"}
    assert stack.drain() == []


def test_a_plan_without_the_model_is_a_403(invoke: Callable[..., Response], stack: Stack) -> None:
    refused = _submit(invoke, {"model": "embed", "inputs": ["a"]}, tenant="initech")
    allowed = _submit(invoke, {"model": "digits", "inputs": [[0] * 64]}, tenant="initech")

    assert refused[0] == 403
    assert refused[2] == {"message": "plan free does not include model embed"}
    assert allowed[0] == 202
    assert len(stack.drain()) == 1


def test_a_big_job_is_routed_to_the_gpu_and_one_over_its_limit_is_a_413(
    invoke: Callable[..., Response], stack: Stack, declaration: Declaration
) -> None:
    routing = declaration.routing_for("embed")
    assert routing.gpu_min_inputs is not None

    small = _submit(invoke, {"model": "embed", "inputs": ["a"] * (routing.gpu_min_inputs - 1)})
    big = _submit(invoke, {"model": "embed", "inputs": ["a"] * routing.gpu_min_inputs})
    too_big = _submit(invoke, {"model": "embed", "inputs": ["a"] * (routing.gpu_max_inputs + 1)})

    assert (small[0], big[0]) == (202, 202)
    backends = {
        body["job_id"]: body["backend"]
        for body in (_show(invoke, small[2]["job_id"]), _show(invoke, big[2]["job_id"]))
    }
    assert backends == {small[2]["job_id"]: "lambda", big[2]["job_id"]: "modal"}
    assert too_big[0] == 413
    assert too_big[2] == {
        "message": f"{routing.gpu_max_inputs + 1} inputs is more than a GPU job of embed may "
        f"carry ({routing.gpu_max_inputs}, routing.embed.gpu_max_inputs); split it into "
        "several jobs"
    }
    assert len(stack.drain()) == 2


def _show(invoke: Callable[..., Response], job_id: str) -> Any:
    status, _, body = invoke("api", "acme", "GET", f"/v2/jobs/{job_id}")
    assert status == 200
    return body


@pytest.mark.parametrize("value", [1e39, -3.5e38], ids=["over", "under"])
def test_a_number_too_large_for_float32_is_a_422(
    invoke: Callable[..., Response], stack: Stack, value: float
) -> None:
    rows = [[0.0] * 64, [0.0] * 63 + [value]]

    status, _, body = _submit(invoke, {"model": "digits", "inputs": rows})

    assert status == 422
    assert body == {"message": "inputs[1]: a value is too large for float32 (max 3.4e38)"}
    assert stack.drain() == []


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/hook",
        "ftp://example.com/hook",
        "https:///hook",
        "hook",
        7,
        # Found by the fuzz suite: URLs urllib cannot parse were a 500.
        "https://[::1",
        "https://example.com:99999/hook",
    ],
)
def test_a_callback_url_must_be_https_or_local_http(
    invoke: Callable[..., Response], stack: Stack, url: Any
) -> None:
    status, _, body = _submit(invoke, {"model": "embed", "inputs": ["a"], "callback_url": url})

    assert status == 422
    assert "callback_url" in body["message"]
    assert stack.drain() == []


@pytest.mark.parametrize("url", ["https://example.com/hook?job=1", "http://localhost:9000/hook"])
def test_an_https_or_local_callback_url_is_kept_on_the_job(
    invoke: Callable[..., Response], url: str
) -> None:
    status, _, submitted = _submit(invoke, {"model": "embed", "inputs": ["a"], "callback_url": url})
    assert status == 202

    _, _, job = invoke("api", "acme", "GET", f"/v2/jobs/{submitted['job_id']}")

    assert job["callback"] == {"url": url, "delivered": False}


@pytest.mark.parametrize(
    "url", ["https://10.0.0.1/hook", "https://169.254.169.254/latest/meta-data/"]
)
def test_even_the_local_stack_calls_back_no_private_address(
    invoke: Callable[..., Response], stack: Stack, url: str
) -> None:
    status, _, body = _submit(invoke, {"model": "embed", "inputs": ["a"], "callback_url": url})

    assert status == 422
    assert body == {"message": NOT_PRIVATE}
    assert stack.drain() == []


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://localhost:9000/hook", '"callback_url" must use https'),
        ("https://localhost/hook", '"callback_url" must not point at this machine'),
        ("https://127.0.0.1/hook", NOT_PRIVATE),
        ("https://10.0.0.1/hook", NOT_PRIVATE),
        ("https://169.254.169.254/latest/meta-data/", NOT_PRIVATE),
    ],
)
def test_outside_the_local_stack_a_callback_url_must_be_https_to_a_public_host(
    invoke_deployed: Callable[..., Response], stack: Stack, url: str, message: str
) -> None:
    status, _, body = _submit(
        invoke_deployed, {"model": "embed", "inputs": ["a"], "callback_url": url}
    )
    allowed = _submit(
        invoke_deployed,
        {"model": "embed", "inputs": ["a"], "callback_url": "https://example.com/hook"},
    )

    assert status == 422
    assert body == {"message": message}
    assert allowed[0] == 202
    assert len(stack.drain()) == 1


def test_a_callback_url_over_2048_characters_is_a_422_not_a_503(
    invoke_deployed: Callable[..., Response], stack: Stack
) -> None:
    for url in ("https://example.com/?" + "a" * 2028, "https://example.com/?" + "a" * 500_000):
        status, _, body = _submit(
            invoke_deployed, {"model": "embed", "inputs": ["a"], "callback_url": url}
        )

        assert status == 422
        assert body == {"message": '"callback_url" must be at most 2048 characters long'}
    assert stack.drain() == []


@pytest.mark.parametrize(
    ("url", "message"),
    [
        # The resolver reads these as 127.0.0.1.
        ("https://2130706433/", "must name its host by a DNS name or a standard IP address"),
        ("https://0177.0.0.1/", "must name its host by a DNS name or a standard IP address"),
        # Resolved at submission, as before each POST.
        ("https://internal.example.com/hook", NOT_PRIVATE.removeprefix('"callback_url" ')),
        (
            "https://nat64.example.com/hook",
            "must not point at an IPv6 address that carries an IPv4 one "
            "(NAT64, 6to4, Teredo, IPv4-mapped or IPv4-compatible)",
        ),
        (
            "https://[64:ff9b::7f00:1]/hook",
            "must not point at an IPv6 address that carries "
            "an IPv4 one (NAT64, 6to4, Teredo, IPv4-mapped or IPv4-compatible)",
        ),
        ("https://example.com:8443/hook", "must use port 443"),
        ("https://no-such-host.invalid/hook", "names a host that does not resolve"),
    ],
)
def test_a_callback_host_is_resolved_and_checked_at_submission(
    invoke_deployed: Callable[..., Response], stack: Stack, url: str, message: str
) -> None:
    status, _, body = _submit(
        invoke_deployed, {"model": "embed", "inputs": ["a"], "callback_url": url}
    )

    assert status == 422
    assert body["message"].startswith(f'"callback_url" {message}')
    assert stack.drain() == []


# -- predict too big for the inline path -----------------------------------------------


def test_a_predict_over_the_inline_limit_becomes_a_job(
    invoke: Callable[..., Response], stack: Stack
) -> None:
    request_id = str(uuid.uuid4())
    inputs = [f"text {index}" for index in range(65)]

    status, headers, body = invoke(
        "embed", "acme", "POST", "/v2/predict/embed", {"inputs": inputs}, request_id=request_id
    )

    assert status == 202
    assert body["status"] == "queued"
    assert headers["location"] == body["status_url"] == f"/prod/v2/jobs/{body['job_id']}"
    (message,) = stack.drain()
    decoded = JobMessage.decode(message["Body"])
    assert (decoded.job_id, decoded.inputs, decoded.correlation_id) == (
        body["job_id"],
        inputs,
        request_id,
    )
    _, _, job = invoke("api", "acme", "GET", f"/v2/jobs/{body['job_id']}")
    assert (job["status"], job["inputs"]) == ("queued", 65)


def test_a_predict_over_the_gpu_limit_is_a_413(
    invoke: Callable[..., Response], stack: Stack, declaration: Declaration
) -> None:
    too_many = ["a"] * (declaration.routing_for("embed").gpu_max_inputs + 1)

    status, _, body = invoke("embed", "acme", "POST", "/v2/predict/embed", {"inputs": too_many})

    assert status == 413
    assert "routing.embed.gpu_max_inputs" in body["message"]
    assert stack.drain() == []


def test_a_predict_job_with_a_bad_input_is_a_422_naming_it(
    invoke: Callable[..., Response], stack: Stack
) -> None:
    inputs: list[Any] = ["a"] * 70
    inputs[66] = {"text": "a"}

    status, _, body = invoke("embed", "acme", "POST", "/v2/predict/embed", {"inputs": inputs})

    assert status == 422
    assert body == {"message": "inputs[66]: expected a string, got an object"}
    assert stack.drain() == []


def test_a_predict_job_is_refused_by_a_plan_without_the_model(
    invoke: Callable[..., Response], stack: Stack
) -> None:
    status, _, body = invoke(
        "embed", "initech", "POST", "/v2/predict/embed", {"inputs": ["a"] * 65}
    )

    assert status == 403
    assert body == {"message": "plan free does not include model embed"}
    assert stack.drain() == []


# -- cancel ----------------------------------------------------------------------------


def test_a_queued_job_is_cancelled_and_cancelling_it_again_answers_the_same(
    invoke: Callable[..., Response],
) -> None:
    _, _, submitted = _submit(invoke, {"model": "embed", "inputs": ["a"]})
    path = f"/v2/jobs/{submitted['job_id']}"

    status, _, cancelled = invoke("api", "acme", "DELETE", path)
    # A client's retry of a DELETE whose answer was lost: not an error.
    again_status, _, again = invoke("api", "acme", "DELETE", path)
    _, _, shown = invoke("api", "acme", "GET", path)

    assert status == again_status == 200
    assert cancelled["status"] == "cancelled"
    assert cancelled["job_id"] == submitted["job_id"]
    assert "finished_at" in cancelled
    assert again == cancelled
    assert shown["status"] == "cancelled"


def test_cancelling_a_missing_job_is_a_404(invoke: Callable[..., Response]) -> None:
    missing = str(uuid.uuid4())

    status, _, body = invoke("api", "acme", "DELETE", f"/v2/jobs/{missing}")

    assert status == 404
    assert body == {"message": f"no job {missing}"}


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_a_job_id_that_is_not_a_uuid_is_a_404_without_asking_the_store(
    stack: Stack, declaration: Declaration, method: str
) -> None:
    # A store that would answer 503: a 404 says it was never asked.
    call = _unreadable_store(stack, declaration)

    short = call(method, "/v2/jobs/some-job")
    long = call(method, "/v2/jobs/" + "x" * 2000)  # DynamoDB would refuse a key this long

    assert short[0] == long[0] == 404
    assert short[2] == {"message": "no job some-job"}
    assert long[2] == {"message": "no job " + "x" * 64}


# -- without the job path --------------------------------------------------------------


def test_without_the_jobs_settings_every_job_route_is_a_503_saying_why(
    stack: Stack, declaration: Declaration
) -> None:
    unset = Settings(jobs_table=None, jobs_bucket=None, jobs_queue_url=None)
    handlers = {
        name: _handler(_environment(declaration, name, unset, stack.url))
        for name in ("api", "embed")
    }

    def call(name: str, method: str, path: str, body: Any = None) -> Response:
        event = rest_event(method, path, body)
        event["requestContext"]["identity"]["apiKeyId"] = stack.keys["acme"]
        return handlers[name](event)

    answers = [
        call("api", "POST", "/v2/jobs", {"model": "embed", "inputs": ["a"]}),
        call("api", "GET", "/v2/jobs/some-job"),
        call("api", "DELETE", "/v2/jobs/some-job"),
        call("embed", "POST", "/v2/predict/embed", {"inputs": ["a"] * 65}),
    ]

    for status, _, body in answers:
        assert status == 503
        missing = (variables.JOBS_TABLE, variables.JOBS_BUCKET, variables.JOBS_QUEUE_URL)
        assert ", ".join(missing) in body["message"]
        assert "jobs are not set up for this function" in body["message"]
    assert stack.drain() == []


def _unreadable_store(stack: Stack, declaration: Declaration) -> Callable[..., Response]:
    """The api function with a job table that AWS says does not exist."""
    settings = Settings(
        jobs_table="no-such-table",
        jobs_bucket=stack.resources.bucket,
        jobs_queue_url=stack.resources.queue_url,
    )
    handler = _handler(_environment(declaration, "api", settings, stack.url))

    def call(method: str, path: str, body: Any = None) -> Response:
        event = rest_event(method, path, body)
        event["requestContext"]["identity"]["apiKeyId"] = stack.keys["acme"]
        return handler(event)

    return call


def test_a_store_that_refuses_a_submission_is_a_503(stack: Stack, declaration: Declaration) -> None:
    call = _unreadable_store(stack, declaration)

    status, _, body = call("POST", "/v2/jobs", {"model": "embed", "inputs": ["a"]})

    assert status == 503
    # AWS's error code only: its message (which names the table) stays in the logs.
    assert body == {
        "message": "the job store refused the job (AWS error ResourceNotFoundException); try again"
    }
    assert stack.drain() == []


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_a_store_that_refuses_a_read_is_a_503(
    stack: Stack, declaration: Declaration, method: str
) -> None:
    call = _unreadable_store(stack, declaration)

    status, _, body = call(method, f"/v2/jobs/{uuid.uuid4()}")

    assert status == 503
    assert body == {
        "message": "the job store could not be read (AWS error ResourceNotFoundException); "
        "try again"
    }
