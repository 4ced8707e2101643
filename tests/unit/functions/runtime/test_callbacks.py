"""Job callbacks: signed as Stripe signs webhooks, sent only to URLs stratoserve may POST
to, delivered to a real HTTP receiver on 127.0.0.1, retried with backoff on the sender's
own (injected) clock, never redirected."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

import pytest

from functions.runtime.callbacks import (
    SIGNATURE_HEADER,
    TOLERANCE_S,
    CallbackRefused,
    CallbackSender,
    check_url,
    signature,
    tenant_secret,
    verify,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

SIGNING_KEY = b"project-signing-key"
BODY = b'{"job_id":"j-1","status":"succeeded","result":[1,2]}'


# -- signatures ------------------------------------------------------------------------


def test_a_signature_verifies_with_the_same_secret() -> None:
    secret = tenant_secret(SIGNING_KEY, "acme")
    header = signature(secret, 1_700_000_000, BODY)

    assert header.startswith("t=1700000000,v1=")
    assert verify(secret, header, BODY, now=1_700_000_000)


def test_a_tampered_body_or_another_secret_fails() -> None:
    secret = tenant_secret(SIGNING_KEY, "acme")
    header = signature(secret, 1_700_000_000, BODY)

    assert not verify(secret, header, BODY.replace(b"1,2", b"1,3"), now=1_700_000_000)
    assert not verify(tenant_secret(SIGNING_KEY, "globex"), header, BODY, now=1_700_000_000)
    assert not verify(tenant_secret(b"other-key", "acme"), header, BODY, now=1_700_000_000)


def test_a_timestamp_outside_the_tolerance_fails_either_way() -> None:
    secret = tenant_secret(SIGNING_KEY, "acme")
    signed_at = 1_700_000_000
    header = signature(secret, signed_at, BODY)

    assert verify(secret, header, BODY, now=signed_at + TOLERANCE_S)
    assert not verify(secret, header, BODY, now=signed_at + TOLERANCE_S + 1)
    assert not verify(secret, header, BODY, now=signed_at - TOLERANCE_S - 1)


def test_a_rewritten_timestamp_fails() -> None:
    secret = tenant_secret(SIGNING_KEY, "acme")
    header = signature(secret, 1_700_000_000, BODY)
    moved = header.replace("t=1700000000", "t=1700000100")

    assert not verify(secret, moved, BODY, now=1_700_000_100)


@pytest.mark.parametrize("header", ["", "garbage", "t=soon,v1=abc", "v1=abc", "t=1700000000"])
def test_a_malformed_header_fails_without_raising(header: str) -> None:
    assert not verify(tenant_secret(SIGNING_KEY, "acme"), header, BODY, now=1_700_000_000)


def test_each_tenant_has_its_own_secret() -> None:
    assert tenant_secret(SIGNING_KEY, "acme") == tenant_secret(SIGNING_KEY, "acme")
    assert tenant_secret(SIGNING_KEY, "acme") != tenant_secret(SIGNING_KEY, "globex")
    assert tenant_secret(SIGNING_KEY, "acme") != tenant_secret(b"another-key", "acme")


# -- which URLs ------------------------------------------------------------------------

NOT_PRIVATE = "must not point at a private, loopback or link-local address"


@pytest.mark.parametrize(
    "url",
    ["https://example.com/hook?job=1", "https://93.184.215.14/hook", "https://[2606:4700::1]/"],
)
def test_https_to_a_public_host_is_allowed(url: str) -> None:
    assert check_url(url) == url
    assert check_url(url, allow_loopback=True) == url


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://example.com/hook", "must use https"),
        ("http://localhost:9000/hook", "must use https"),
        ("ftp://example.com/hook", "must be an absolute https:// URL"),
        ("https:///hook", "must be an absolute https:// URL"),
        ("hook", "must be an absolute https:// URL"),
        ("https://localhost/hook", "must not point at this machine"),
        ("https://127.0.0.1/hook", NOT_PRIVATE),
        ("https://[::1]/hook", NOT_PRIVATE),
        ("https://10.0.0.1/hook", NOT_PRIVATE),
        ("https://192.168.1.20/hook", NOT_PRIVATE),
        ("https://169.254.169.254/latest/meta-data/", NOT_PRIVATE),
        ("https://[fe80::1]/hook", NOT_PRIVATE),
        ("https://0.0.0.0/hook", NOT_PRIVATE),
        ("https://[::1", "is not a valid URL (Invalid IPv6 URL)"),
        ("https://example.com:99999/hook", "is not a valid URL (Port out of range 0-65535)"),
        (
            "https://example.com:http/hook",
            "is not a valid URL (Port could not be cast to integer value as 'http')",
        ),
    ],
)
def test_outside_the_local_stack_only_https_to_a_public_host_is_allowed(
    url: str, reason: str
) -> None:
    with pytest.raises(CallbackRefused) as caught:
        check_url(url)

    assert str(caught.value) == reason


@pytest.mark.parametrize(
    "url", ["http://localhost:9000/hook", "http://127.0.0.1:9000/hook", "https://[::1]:9000/"]
)
def test_the_local_stack_may_call_back_this_machine(url: str) -> None:
    assert check_url(url, allow_loopback=True) == url


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://10.0.0.1/hook", NOT_PRIVATE),
        ("https://169.254.169.254/latest/meta-data/", NOT_PRIVATE),
        ("http://10.0.0.1/hook", "must use https"),
        ("http://example.com/hook", "must use https"),
    ],
)
def test_the_local_stack_may_not_call_its_neighbours(url: str, reason: str) -> None:
    with pytest.raises(CallbackRefused) as caught:
        check_url(url, allow_loopback=True)

    assert str(caught.value) == reason


# -- delivery --------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    method: str = "POST"


@dataclass
class Receiver:
    """A real HTTP server answering with scripted statuses, one a request (then 200)."""

    url: str = ""
    statuses: list[int] = field(default_factory=list)
    delays_s: list[float] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    on_request: list[Callable[[], object]] = field(default_factory=list)


class Clock:
    """The sender's monotonic clock: it moves only when the sender sleeps (or a test
    moves it), so backoff costs no real time."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.do_POST()  # only a followed redirect would GET: recorded, to be seen

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            with lock:
                state.received.append(
                    Received(
                        self.path,
                        {k.lower(): v for k, v in self.headers.items()},
                        body,
                        self.command,
                    )
                )
                status = state.statuses.pop(0) if state.statuses else 200
                delay = state.delays_s.pop(0) if state.delays_s else 0.0
                for hook in state.on_request:
                    hook()
            if delay:
                time.sleep(delay)
            try:
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("location", "/redirected")
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")
            except OSError:
                pass  # the sender gave up waiting

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    # A short poll interval: shutdown() waits for it, once a test.
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/jobs"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _sender(
    clock: Clock, *, attempts: int = 5, timeout_s: float = 5.0, allow_loopback: bool = True
) -> CallbackSender:
    return CallbackSender(
        lambda: SIGNING_KEY,
        attempts=attempts,
        timeout_s=timeout_s,
        backoff_s=0.5,
        # The receiver is on 127.0.0.1, as in the local stack.
        allow_loopback=allow_loopback,
        sleep=clock.sleep,
        clock=clock,
    )


@pytest.mark.parametrize("status", [200, 202, 204])
def test_a_2xx_delivers_once_with_a_verifiable_signature(receiver: Receiver, status: int) -> None:
    clock = Clock()
    receiver.statuses = [status]

    outcome = _sender(clock).deliver(receiver.url, "acme", BODY, deadline=clock.now + 60)

    assert outcome == {"delivered": True, "attempts": 1, "status": status}
    (request,) = receiver.received
    assert request.path == "/hooks/jobs"
    assert request.body == BODY
    assert request.headers["content-type"] == "application/json"
    header = request.headers[SIGNATURE_HEADER]
    assert verify(tenant_secret(SIGNING_KEY, "acme"), header, BODY)
    assert not verify(tenant_secret(SIGNING_KEY, "globex"), header, BODY)
    assert clock.sleeps == []


@pytest.mark.parametrize("first", [500, 503, 408, 429])
def test_a_server_error_or_a_throttle_is_retried_after_a_backoff(
    receiver: Receiver, first: int
) -> None:
    clock = Clock()
    receiver.statuses = [first, 200]

    outcome = _sender(clock).deliver(receiver.url, "acme", BODY, deadline=clock.now + 60)

    assert outcome == {"delivered": True, "attempts": 2, "status": 200}
    assert len(receiver.received) == 2
    assert clock.sleeps == [0.5]
    assert all(request.body == BODY for request in receiver.received)


@pytest.mark.parametrize("refusal", [400, 401, 404, 410, 422])
def test_a_client_error_is_given_up_at_once(receiver: Receiver, refusal: int) -> None:
    clock = Clock()
    receiver.statuses = [refusal]

    outcome = _sender(clock).deliver(receiver.url, "acme", BODY, deadline=clock.now + 60)

    assert outcome == {"delivered": False, "attempts": 1, "error": f"HTTP {refusal}"}
    assert len(receiver.received) == 1
    assert clock.sleeps == []


def test_it_stops_after_its_attempts_with_doubling_backoff(receiver: Receiver) -> None:
    clock = Clock()
    receiver.statuses = [500, 500, 500, 500]

    outcome = _sender(clock, attempts=3).deliver(
        receiver.url, "acme", BODY, deadline=clock.now + 60
    )

    assert outcome == {"delivered": False, "attempts": 3, "error": "HTTP 500"}
    assert len(receiver.received) == 3
    assert clock.sleeps == [0.5, 1.0], "no pause after the last attempt"


def test_an_unreachable_receiver_is_retried_and_reported() -> None:
    clock = Clock()
    unreachable = "http://127.0.0.1:9/hooks"  # nothing listens on port 9

    outcome = _sender(clock, attempts=2).deliver(unreachable, "acme", BODY, deadline=clock.now + 60)

    assert outcome["delivered"] is False
    assert outcome["attempts"] == 2
    assert outcome["error"]
    assert clock.sleeps == [0.5]


def test_a_slow_receiver_costs_one_attempt_of_timeout_s(receiver: Receiver) -> None:
    clock = Clock()
    receiver.delays_s = [0.5]

    started = time.monotonic()
    outcome = _sender(clock, attempts=2, timeout_s=0.05).deliver(
        receiver.url, "acme", BODY, deadline=clock.now + 60
    )

    assert outcome == {"delivered": True, "attempts": 2, "status": 200}
    assert time.monotonic() - started < 0.45, "the first attempt was not waited out"


def test_a_deadline_already_passed_sends_nothing(receiver: Receiver) -> None:
    clock = Clock()

    outcome = _sender(clock).deliver(receiver.url, "acme", BODY, deadline=clock.now)

    assert outcome["delivered"] is False
    assert outcome["error"] == "out of time"
    assert receiver.received == []


def test_no_pause_is_slept_past_the_deadline(receiver: Receiver) -> None:
    clock = Clock()
    receiver.statuses = [500] * 10
    # Each request takes a second of the sender's clock: three requests and two pauses
    # take 4.5 s of the 5; the third pause (2 s) would pass the deadline.
    receiver.on_request.append(lambda: setattr(clock, "now", clock.now + 1))

    outcome = _sender(clock, attempts=10).deliver(
        receiver.url, "acme", BODY, deadline=clock.now + 5.0
    )

    assert outcome["delivered"] is False
    assert outcome["error"].startswith("HTTP 500")
    assert outcome["error"].endswith("out of time")
    assert clock.sleeps == [0.5, 1.0]
    assert clock.now <= 1_000.0 + 5.0 + 1, "nothing started after the deadline"


def test_a_retry_with_no_time_for_its_backoff_is_not_sent(receiver: Receiver) -> None:
    clock = Clock()
    receiver.statuses = [500] * 10
    receiver.on_request.append(lambda: setattr(clock, "now", clock.now + 1))

    _sender(clock, attempts=10).deliver(receiver.url, "acme", BODY, deadline=clock.now + 5.0)

    assert len(receiver.received) == 3, "the three requests its backoff left time for"


def test_the_reported_attempts_are_the_requests_sent(receiver: Receiver) -> None:
    clock = Clock()
    receiver.statuses = [500]
    receiver.on_request.append(lambda: setattr(clock, "now", clock.now + 10))

    outcome = _sender(clock, attempts=5).deliver(
        receiver.url, "acme", BODY, deadline=clock.now + 5.0
    )

    assert len(receiver.received) == 1
    assert outcome == {"delivered": False, "attempts": 1, "error": "HTTP 500; out of time"}


# -- what is never sent, or followed ---------------------------------------------------


@pytest.mark.parametrize("redirect", [301, 302, 303, 307, 308])
def test_a_redirect_is_a_refusal_not_followed_nor_retried(
    receiver: Receiver, redirect: int
) -> None:
    clock = Clock()
    receiver.statuses = [redirect]

    outcome = _sender(clock).deliver(receiver.url, "acme", BODY, deadline=clock.now + 60)

    assert outcome == {"delivered": False, "attempts": 1, "error": f"HTTP {redirect}"}
    (request,) = receiver.received
    assert (request.method, request.path) == ("POST", "/hooks/jobs"), "nothing followed it"
    assert clock.sleeps == []


def test_outside_the_local_stack_this_machine_is_not_called_back(receiver: Receiver) -> None:
    clock = Clock()
    https = receiver.url.replace("http://", "https://")
    sender = _sender(clock, allow_loopback=False)

    outcomes = [
        sender.deliver(url, "acme", BODY, deadline=clock.now + 60)
        for url in (receiver.url, https, https.replace("127.0.0.1", "localhost"))
    ]

    assert outcomes == [
        {"delivered": False, "attempts": 0, "error": "not sent: must use https"},
        {"delivered": False, "attempts": 0, "error": f"not sent: {NOT_PRIVATE}"},
        {"delivered": False, "attempts": 0, "error": "not sent: must not point at this machine"},
    ]
    assert receiver.received == []
    assert clock.sleeps == []


def test_a_host_name_is_checked_where_it_resolves_before_the_post() -> None:
    """A name that passed at submission may point at this machine by the time the worker
    sends: the sender resolves it and checks every address first."""
    host = socket.gethostname()
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        pytest.skip(f"this machine's name ({host}) does not resolve here")
    if any(ipaddress.ip_address(address).is_global for address in addresses):
        pytest.skip(f"this machine's name ({host}) resolves to a public address")
    clock = Clock()
    url = f"https://{host}:9/hooks"
    assert check_url(url) == url, "a name passes until it is resolved"

    outcome = _sender(clock, allow_loopback=False).deliver(
        url, "acme", BODY, deadline=clock.now + 60
    )

    assert outcome == {"delivered": False, "attempts": 0, "error": f"not sent: {NOT_PRIVATE}"}


def test_a_name_that_does_not_resolve_is_not_sent() -> None:
    clock = Clock()

    outcome = _sender(clock, allow_loopback=False).deliver(
        "https://no-such-host.invalid/hooks", "acme", BODY, deadline=clock.now + 60
    )

    assert outcome["delivered"] is False
    assert outcome["attempts"] == 0
    assert outcome["error"].startswith("not sent: ")
    assert clock.sleeps == []
