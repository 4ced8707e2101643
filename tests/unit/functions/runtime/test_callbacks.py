"""Job callbacks: signed as Stripe signs webhooks, sent only to URLs stratoserve may POST
to, delivered to a real HTTP receiver on 127.0.0.1, retried with backoff on the sender's
own (injected) clock, never redirected."""

from __future__ import annotations

import ipaddress
import socket
import ssl
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
    check_destination,
    check_url,
    signature,
    tenant_secret,
    verify,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

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
    url = f"https://{host}/hooks"
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


# -- secret versions and what verify() takes ---------------------------------------------


def test_version_1_is_the_secret_derived_before_versions_existed() -> None:
    import hashlib
    import hmac

    before = hmac.new(SIGNING_KEY, b"callback-secret:acme", hashlib.sha256).hexdigest()

    assert tenant_secret(SIGNING_KEY, "acme") == before
    assert tenant_secret(SIGNING_KEY, "acme", 1) == before
    assert tenant_secret(SIGNING_KEY, "acme", 2) != before
    assert tenant_secret(SIGNING_KEY, "acme", 2) != tenant_secret(SIGNING_KEY, "acme", 3)
    with pytest.raises(ValueError, match="secret version must be 1 or more"):
        tenant_secret(SIGNING_KEY, "acme", 0)


def test_a_callback_is_signed_with_the_job_s_secret_version(receiver: Receiver) -> None:
    clock = Clock()

    _sender(clock).deliver(receiver.url, "acme", BODY, deadline=clock.now + 60, secret_version=2)

    header = receiver.received[0].headers[SIGNATURE_HEADER]
    assert verify(tenant_secret(SIGNING_KEY, "acme", 2), header, BODY)
    assert not verify(tenant_secret(SIGNING_KEY, "acme", 1), header, BODY)


@pytest.mark.parametrize("header", ["t=1700000000,v1=é", "t=١٧٠٠٠٠٠٠٠٠,v1=abc", "☃"])
def test_a_non_ascii_header_fails_without_raising(header: str) -> None:
    assert not verify(tenant_secret(SIGNING_KEY, "acme"), header, BODY, now=1_700_000_000)


# -- where a callback may go: length, numeric hosts, IPv6 carrying IPv4, ports ------------


EMBEDDED = (
    "must not point at an IPv6 address that carries an IPv4 one "
    "(NAT64, 6to4, Teredo, IPv4-mapped or IPv4-compatible)"
)


def test_a_url_over_2048_characters_is_refused() -> None:
    fits = "https://example.com/" + "a" * (2048 - len("https://example.com/"))
    assert check_url(fits) == fits

    with pytest.raises(CallbackRefused, match="must be at most 2048 characters long"):
        check_url(fits + "a")
    with pytest.raises(CallbackRefused, match="must be at most 2048 characters long"):
        check_url("https://example.com/?" + "a" * 500_000)


@pytest.mark.parametrize(
    "url",
    ["https://2130706433/", "https://0177.0.0.1/", "https://0x7f.1/", "https://127.1/"],
)
def test_a_host_written_as_a_number_is_refused(url: str) -> None:
    """The resolver reads these as 127.0.0.1; ipaddress does not read them at all."""
    with pytest.raises(CallbackRefused):
        check_url(url)
    with pytest.raises(CallbackRefused):
        check_destination(url, resolve=socket.gethostbyname_ex)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "64:ff9b:1::a00:1",  # local-use NAT64
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "2002:5db8:d70e::1",  # 6to4 of a public address: still refused outright
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
        "::7f00:1",  # IPv4-compatible 127.0.0.1
        "::5db8:d70e",  # IPv4-compatible public address
        "::ffff:93.184.215.14",  # IPv4-mapped public address
        "::ffff:127.0.0.1",  # IPv4-mapped loopback
    ],
)
def test_ipv6_addresses_that_carry_an_ipv4_one_are_refused(address: str) -> None:
    with pytest.raises(CallbackRefused) as literal:
        check_url(f"https://[{address}]/hook")
    with pytest.raises(CallbackRefused) as resolved:
        check_destination("https://hooks.example.com/", resolve=lambda host: [address])

    assert str(literal.value) == EMBEDDED
    assert str(resolved.value) == str(literal.value)


@pytest.mark.parametrize("address", ["224.0.0.1", "240.0.0.1", "100.64.0.1", "192.0.0.8"])
def test_multicast_reserved_and_shared_addresses_are_refused(address: str) -> None:
    with pytest.raises(CallbackRefused, match=NOT_PRIVATE):
        check_destination("https://hooks.example.com/", resolve=lambda host: [address])


def test_a_name_is_refused_if_any_of_its_addresses_is() -> None:
    with pytest.raises(CallbackRefused, match=NOT_PRIVATE):
        check_destination(
            "https://hooks.example.com/", resolve=lambda host: ["93.184.215.14", "10.0.0.7"]
        )


@pytest.mark.parametrize(
    "url",
    ["https://example.com:8443/hook", "https://93.184.215.14:80/", "https://[2606:4700::1]:1/"],
)
def test_only_port_443_is_allowed(url: str) -> None:
    with pytest.raises(CallbackRefused, match="must use port 443"):
        check_url(url)


def test_the_local_stack_allows_other_ports_on_loopback_only() -> None:
    public = check_destination(
        "https://hooks.example.com:443/",
        allow_loopback=True,
        resolve=lambda host: ["93.184.215.14"],
    )
    loopback = check_destination(
        "https://hooks.test:8443/x?y=1", allow_loopback=True, resolve=lambda host: ["127.0.0.1"]
    )

    assert (public.port, public.addresses) == (443, ("93.184.215.14",))
    assert (loopback.port, loopback.target, loopback.addresses) == (8443, "/x?y=1", ("127.0.0.1",))
    with pytest.raises(CallbackRefused, match="must use port 443"):
        check_destination(
            "https://hooks.example.com:8443/",
            allow_loopback=True,
            resolve=lambda host: ["93.184.215.14"],
        )


def test_a_name_that_does_not_resolve_is_refused_when_checked() -> None:
    def nowhere(host: str) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(CallbackRefused, match="names a host that does not resolve"):
        check_destination("https://hooks.example.com/", resolve=nowhere)


# -- a total deadline per attempt and per job --------------------------------------------


@pytest.fixture
def trickler() -> Iterator[str]:
    """A receiver that reads the request, then answers one byte every 50 ms: a socket
    timeout never fires (each read gets a byte), and a full answer takes seconds."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.05)
    stop = threading.Event()
    answer = b"HTTP/1.1 200 OK\r\n" + b"x-padding: " + b"." * 100 + b"\r\ncontent-length: 0\r\n\r\n"

    def trickle(connection: socket.socket) -> None:
        with connection:
            connection.recv(65536)
            for byte in answer:
                if stop.is_set():
                    return
                try:
                    connection.sendall(bytes([byte]))
                except OSError:
                    return  # the sender gave up
                time.sleep(0.05)

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=trickle, args=(connection,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/hooks"
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()


def test_a_receiver_trickling_its_answer_is_cut_at_the_attempt_s_deadline(
    trickler: str,
) -> None:
    clock = Clock()
    sender = _sender(clock, attempts=1, timeout_s=0.3)

    started = time.monotonic()
    outcome = sender.deliver(trickler, "acme", BODY, deadline=clock.now + 60)
    took = time.monotonic() - started

    assert outcome == {"delivered": False, "attempts": 1, "error": "no answer within 0.3 s"}
    assert took < 0.8, f"one attempt of 0.3 s took {took:.2f} s"


def test_a_job_s_attempts_all_end_by_its_deadline(trickler: str) -> None:
    sender = CallbackSender(
        lambda: SIGNING_KEY, attempts=10, timeout_s=5.0, backoff_s=0.01, allow_loopback=True
    )

    started = time.monotonic()
    outcome = sender.deliver(trickler, "acme", BODY, deadline=started + 0.5)
    took = time.monotonic() - started

    assert outcome["delivered"] is False
    assert took < 1.0, f"a job's 0.5 s of callbacks took {took:.2f} s"


# -- the POST goes to the address that was checked ---------------------------------------


@dataclass
class TlsReceiver:
    port: int
    client_context: ssl.SSLContext
    requests: list[tuple[str | None, dict[str, str]]] = field(default_factory=list)
    """(the SNI name the client sent, the request's headers)"""


def _certificate(name: str) -> tuple[bytes, bytes, bytes]:
    """A CA, and a certificate it signed for `name`: (CA PEM, certificate PEM, key PEM)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return (
        ca.public_bytes(serialization.Encoding.PEM),
        certificate.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


@pytest.fixture
def tls_receiver(tmp_path: Path) -> Iterator[TlsReceiver]:
    """An https receiver on 127.0.0.1 whose certificate names hooks.example.com."""
    ca, certificate, key = _certificate("hooks.example.com")
    (tmp_path / "cert.pem").write_bytes(certificate)
    (tmp_path / "key.pem").write_bytes(key)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    names: list[str | None] = []

    def heard(sock: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        names.append(name)

    server_context.sni_callback = heard
    client_context = ssl.create_default_context(cadata=ca.decode())
    lock = threading.Lock()
    state: TlsReceiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", "0")))
            with lock:
                state.requests.append(
                    (names[-1] if names else None, {k.lower(): v for k, v in self.headers.items()})
                )
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    class TlsServer(ThreadingHTTPServer):
        def get_request(self) -> tuple[socket.socket, object]:
            connection, address = super().get_request()
            return server_context.wrap_socket(connection, server_side=True), address

    server = TlsServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state = TlsReceiver(port=server.server_address[1], client_context=client_context)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class RebindingResolver:
    """A name that resolves to `first` when checked, and anywhere else afterwards."""

    def __init__(self, first: str, afterwards: str) -> None:
        self.answers = [first]
        self.afterwards = afterwards
        self.asked: list[str] = []

    def __call__(self, host: str) -> list[str]:
        self.asked.append(host)
        return [self.answers.pop(0) if self.answers else self.afterwards]


def test_the_post_goes_to_the_checked_address_with_sni_and_host_set_to_the_name(
    tls_receiver: TlsReceiver,
) -> None:
    clock = Clock()
    # Checked: 127.0.0.1 (the local stack allows loopback). Any later lookup rebinds to
    # 10.0.0.7: a sender that resolved again to connect would go there (and fail).
    resolver = RebindingResolver("127.0.0.1", "10.0.0.7")
    sender = CallbackSender(
        lambda: SIGNING_KEY,
        attempts=1,
        allow_loopback=True,
        sleep=clock.sleep,
        clock=clock,
        resolve=resolver,
        tls=tls_receiver.client_context,
    )
    url = f"https://hooks.example.com:{tls_receiver.port}/hooks"

    outcome = sender.deliver(url, "acme", BODY, deadline=clock.now + 60)

    assert outcome == {"delivered": True, "attempts": 1, "status": 204}
    assert resolver.asked == ["hooks.example.com"], "resolved once, for the check"
    ((sni, headers),) = tls_receiver.requests
    assert sni == "hooks.example.com"
    assert headers["host"] == f"hooks.example.com:{tls_receiver.port}"
    assert verify(tenant_secret(SIGNING_KEY, "acme"), headers[SIGNATURE_HEADER], BODY)


def test_a_certificate_for_another_name_is_not_accepted(tls_receiver: TlsReceiver) -> None:
    clock = Clock()
    sender = CallbackSender(
        lambda: SIGNING_KEY,
        attempts=1,
        allow_loopback=True,
        sleep=clock.sleep,
        clock=clock,
        resolve=lambda host: ["127.0.0.1"],
        tls=tls_receiver.client_context,
    )

    outcome = sender.deliver(
        f"https://other.example.com:{tls_receiver.port}/hooks",
        "acme",
        BODY,
        deadline=clock.now + 60,
    )

    assert outcome["delivered"] is False
    assert "certificate verify failed" in outcome["error"]
    assert tls_receiver.requests == []
