"""Job callbacks: when a job finishes, its `callback_url` gets the job (as GET shows it) in
a POST, signed with HMAC-SHA256 under the tenant's own secret.

The signature header reads `t=<unix seconds>,v1=<hex digest of "<t>.<body>">`, as Stripe's
webhooks do: a receiver recomputes it with its secret and refuses old timestamps. Each
tenant's secret is derived from the project's signing key and the tenant's secret version,
so none is stored per tenant; `stratoserve jobs callback-secret --tenant T` shows it to the
operator (from the local stack's key; the deployed key lives in Secrets Manager).

Where a callback may go is checked when the job is submitted and again right before each
POST, the same way (`check_destination`): https on port 443, the host name resolved and
every address it resolves to public. The POST then goes to one of those checked addresses,
with the host name only in SNI, the certificate check and the Host header, so a DNS answer
that changes between the check and the connection cannot redirect it. Redirects are never
followed. Each attempt has a total deadline, however slowly the receiver answers.

Callbacks leave the worker through their own queue (functions/runtime/callback_queue.py),
so a slow receiver never holds a batch of jobs; functions/worker/callbacks.py sends them.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import io
import ipaddress
import re
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import http.client
    import ssl

SIGNATURE_HEADER = "x-stratoserve-signature"
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
TOLERANCE_S = 300
"""How old a signed timestamp a receiver should accept."""
MAX_URL_LENGTH = 2048
"""The longest callback_url accepted (what browsers and most servers take)."""
HTTPS_PORT = 443

NOT_PRIVATE = "must not point at a private, loopback or link-local address"
EMBEDDED_IPV4 = (
    "must not point at an IPv6 address that carries an IPv4 one "
    "(NAT64, 6to4, Teredo, IPv4-mapped or IPv4-compatible)"
)
_CARRY_IPV4 = tuple(
    ipaddress.IPv6Network(network)
    for network in (
        "64:ff9b::/96",  # NAT64: the gateway would connect to the embedded IPv4 address
        "64:ff9b:1::/48",  # local-use NAT64
        "2002::/16",  # 6to4
        "2001::/32",  # Teredo
        "::ffff:0:0/96",  # IPv4-mapped
        "::/96",  # IPv4-compatible (deprecated; ::1 is loopback, checked before)
    )
)
"""IPv6 ranges whose addresses lead to an IPv4 address: which one is not worth guessing
(a NAT64 prefix may be any /96 the network chose), so they are refused outright."""
_SPECIAL_IPV4 = tuple(
    ipaddress.IPv4Network(network)
    for network in (
        "192.0.0.0/24",  # IETF protocol assignments (some of which Python calls global)
        "192.88.99.0/24",  # 6to4 relays (deprecated)
    )
)
_NUMERIC_LABEL = re.compile(r"(0x[0-9a-f]*|[0-9]+)")
"""A last label that no DNS name has (RFC 3696 §2) but that inet_aton reads as a number:
`https://2130706433/` and `https://0177.0.0.1/` are 127.0.0.1 to the resolver."""

Resolver = Callable[[str], Sequence[str]]
"""A host name -> the addresses it resolves to (socket.getaddrinfo by default)."""


class CallbackRefused(ValueError):
    """A callback URL stratoserve will not POST to; the message says why."""


@dataclass(frozen=True)
class Destination:
    """A callback URL once checked: where the POST goes, and the addresses it may go to."""

    scheme: str
    host: str
    port: int
    target: str
    """The path and query, as the request line carries them."""
    addresses: tuple[str, ...]


def check_url(url: str, *, allow_loopback: bool = False) -> str:
    """https on port 443 to a public host; plain http and loopback on any port only where
    `allow_loopback` (the local stack). Without resolving the host: see check_destination."""
    if len(url) > MAX_URL_LENGTH:
        raise CallbackRefused(f"must be at most {MAX_URL_LENGTH} characters long")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:  # "https://[::1", a port that is not one
        raise CallbackRefused(f"is not a valid URL ({error})") from None
    host = parts.hostname
    if parts.scheme not in ("https", "http") or not host:
        raise CallbackRefused("must be an absolute https:// URL")
    loopback = host.rstrip(".") in LOOPBACK_HOSTS
    if parts.scheme == "http" and not (allow_loopback and loopback):
        raise CallbackRefused("must use https")
    if _address(host) is None:
        if loopback and not allow_loopback:
            raise CallbackRefused("must not point at this machine")
        if _NUMERIC_LABEL.fullmatch(host.rstrip(".").rsplit(".", 1)[-1]):
            raise CallbackRefused("must name its host by a DNS name or a standard IP address")
    else:
        _check_address(host, allow_loopback=allow_loopback)
    if port not in (None, HTTPS_PORT) and not allow_loopback:
        raise CallbackRefused(f"must use port {HTTPS_PORT}")
    return url


def resolve_host(host: str) -> list[str]:
    """Every address `host` resolves to, as the system resolver answers."""
    return [
        str(sockaddr[0])
        for *_, sockaddr in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    ]


def check_destination(
    url: str, *, allow_loopback: bool = False, resolve: Resolver = resolve_host
) -> Destination:
    """check_url, then the host resolved and every address checked: where the POST may
    go. The same check at submission and before each POST."""
    check_url(url, allow_loopback=allow_loopback)
    parts = urlsplit(url)
    host = parts.hostname or ""
    if _address(host) is not None:
        addresses: Sequence[str] = [host]
    else:
        try:
            addresses = resolve(host)
        except (OSError, UnicodeError) as error:
            raise CallbackRefused(f"names a host that does not resolve ({error})") from None
        if not addresses:
            raise CallbackRefused("names a host that does not resolve")
    checked = [_check_address(address, allow_loopback=allow_loopback) for address in addresses]
    port = parts.port or (HTTPS_PORT if parts.scheme == "https" else 80)
    if port != HTTPS_PORT and not all(address.is_loopback for address in checked):
        raise CallbackRefused(f"must use port {HTTPS_PORT}")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Destination(
        scheme=parts.scheme,
        host=host,
        port=port,
        target=target,
        addresses=tuple(dict.fromkeys(str(address) for address in checked)),
    )


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])  # an IPv6 zone is not the address
    except ValueError:
        return None


def _check_address(
    text: str, *, allow_loopback: bool
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    address = _address(text)
    if address is None:
        raise CallbackRefused(f"resolves to {text!r}, which is not an IP address")
    if address.is_loopback and allow_loopback:
        return address
    if (
        isinstance(address, ipaddress.IPv6Address)
        and not address.is_loopback
        and any(address in network for network in _CARRY_IPV4)
    ):
        raise CallbackRefused(EMBEDDED_IPV4)
    # The worker would POST from inside the account's network: not to its neighbours.
    if (
        not address.is_global
        or address.is_multicast
        or address.is_reserved
        or (
            isinstance(address, ipaddress.IPv4Address)
            and any(address in network for network in _SPECIAL_IPV4)
        )
    ):
        raise CallbackRefused(NOT_PRIVATE)
    return address


def tenant_secret(signing_key: bytes, tenant: str, version: int = 1) -> str:
    """The tenant's callback secret at `version`: rotating it is bumping the tenant's
    version, which derives a new secret without storing any. Version 1 is the secret
    derived before versions existed, so receivers keep verifying until a rotation."""
    if version < 1:
        raise ValueError(f"secret version must be 1 or more, not {version}")
    # "callback-secret-v2:" can never be a prefix of version 1's "callback-secret:<tenant>".
    label = b"callback-secret:" if version == 1 else f"callback-secret-v{version}:".encode()
    return hmac.new(signing_key, label + tenant.encode(), hashlib.sha256).hexdigest()


def signature(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify(secret: str, header: str, body: bytes, *, now: float | None = None) -> bool:
    """What a receiver does: the signature matches and is recent."""
    if not header.isascii():  # a signature is ASCII; compare_digest raises on anything else
        return False
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs((now if now is not None else time.time()) - timestamp) > TOLERANCE_S:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), header)


@dataclass(frozen=True)
class Attempt:
    """One POST of a callback, or why none was sent."""

    delivered: bool
    status: int | None = None
    error: str | None = None
    retryable: bool = False
    """A later attempt may succeed (a 5xx, 408, 429, a timeout, a connection refused)."""
    sent: bool = True
    """A request went out (False: the URL was refused, or no time was left)."""


class CallbackSender:
    def __init__(
        self,
        signing_key: Callable[[], bytes],
        *,
        attempts: int,
        timeout_s: float = 5.0,
        backoff_s: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        allow_loopback: bool = False,
        resolve: Resolver = resolve_host,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._signing_key = signing_key
        self.allow_loopback = allow_loopback
        self.attempts = attempts
        self.timeout_s = timeout_s
        """Each attempt's total time: connecting, TLS, sending and the answer's head."""
        self.backoff_s = backoff_s
        self._sleep = sleep
        self._clock = clock
        self._resolve = resolve
        self._tls = tls

    def attempt(
        self, url: str, tenant: str, body: bytes, *, deadline: float, secret_version: int = 1
    ) -> Attempt:
        """One POST of `body`, within `timeout_s` and never past `deadline` (both on the
        sender's monotonic clock), signed with the tenant's secret at `secret_version`."""
        budget = min(self.timeout_s, deadline - self._clock())
        if budget <= 0:
            return Attempt(False, error="out of time", retryable=True, sent=False)
        try:
            destination = check_destination(
                url, allow_loopback=self.allow_loopback, resolve=self._resolve
            )
        except CallbackRefused as refused:
            return Attempt(False, error=f"not sent: {refused}", sent=False)
        secret = tenant_secret(self._signing_key(), tenant, secret_version)
        headers = {
            "content-type": "application/json",
            "user-agent": "stratoserve-callback/1",
            SIGNATURE_HEADER: signature(secret, int(time.time()), body),
        }
        # The I/O deadline is real time, whatever clock the sender plans its retries on.
        try:
            status = _post(destination, body, headers, time.monotonic() + budget, self._tls)
        except TimeoutError:
            return Attempt(False, error=f"no answer within {budget:.3g} s", retryable=True)
        except Exception as failure:  # OSError, ssl.SSLError, http.client.HTTPException
            return Attempt(False, error=_describe(failure), retryable=True)
        if 200 <= status < 300:
            return Attempt(True, status=status)
        # A redirect is a refusal (never followed: it would turn the POST into a GET to
        # wherever it points); so is any 4xx but a timeout or a throttle.
        retryable = status >= 500 or status in (408, 429)
        return Attempt(False, status=status, error=f"HTTP {status}", retryable=retryable)

    def deliver(
        self, url: str, tenant: str, body: bytes, *, deadline: float, secret_version: int = 1
    ) -> dict[str, Any]:
        """POST `body` until a 2xx, `attempts` times at most with backoff, and never past
        `deadline` (on the monotonic clock); the outcome as the job records it."""
        error = ""
        sent = 0
        for number in range(1, self.attempts + 1):
            if deadline - self._clock() <= 0:
                error = f"{error}; out of time" if error else "out of time"
                break
            result = self.attempt(
                url, tenant, body, deadline=deadline, secret_version=secret_version
            )
            if not result.sent:
                error = result.error or ""
                break
            sent = number
            if result.delivered:
                return {"delivered": True, "attempts": number, "status": result.status}
            error = result.error or ""
            if not result.retryable or number == self.attempts:
                break
            pause = self.backoff_s * 2 ** (number - 1)
            if self._clock() + pause >= deadline:
                # No time left for the backoff: a retry at once would only hammer the receiver.
                error = f"{error}; out of time"
                break
            self._sleep(pause)
        return {"delivered": False, "attempts": sent, "error": error}


def _describe(failure: BaseException) -> str:
    return str(failure) or type(failure).__name__


def _post(
    destination: Destination,
    body: bytes,
    headers: dict[str, str],
    deadline: float,
    tls: ssl.SSLContext | None,
) -> int:
    """The POST's status, sent to one of the destination's checked addresses."""
    connection = _pinned_connection_class()(destination, deadline, tls)
    try:
        connection.request("POST", destination.target, body=body, headers=headers)
        return connection.getresponse().status
    finally:
        connection.close()


@functools.cache
def _pinned_connection_class() -> Callable[
    [Destination, float, ssl.SSLContext | None], http.client.HTTPConnection
]:
    # Imported on the first callback: most functions never send one, and http.client and
    # ssl cost a cold start.
    import http.client
    import ssl

    class PinnedConnection(http.client.HTTPConnection):
        """Connects to the checked addresses, never to what the host name resolves to by
        then. The host name gives the Host header, and TLS's SNI and certificate check."""

        def __init__(
            self, destination: Destination, deadline: float, tls: ssl.SSLContext | None
        ) -> None:
            super().__init__(destination.host, destination.port, timeout=_remaining(deadline))
            self._destination = destination
            self._deadline = deadline
            self._tls = tls

        def connect(self) -> None:
            destination = self._destination
            sock = _connect(destination.addresses, destination.port, self._deadline)
            if destination.scheme == "https":
                context = self._tls or ssl.create_default_context()
                sock.settimeout(_remaining(self._deadline))  # the whole handshake's time
                sock = context.wrap_socket(sock, server_hostname=destination.host)
            self.sock = _DeadlineSocket(sock, self._deadline)

    return PinnedConnection


def _connect(addresses: Sequence[str], port: int, deadline: float) -> socket.socket:
    error: OSError = OSError("no address to connect to")
    for address in addresses:
        try:
            return socket.create_connection((address, port), timeout=_remaining(deadline))
        except TimeoutError:
            raise
        except OSError as failure:
            error = failure
    raise error


def _remaining(deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("the attempt's deadline passed")
    return remaining


class _DeadlineSocket:
    """A connected socket whose every send and receive gets only the time left before
    the deadline: a receiver that trickles its answer a byte at a time cannot stretch an
    attempt (a socket timeout alone bounds each operation, not their sum)."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def sendall(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            self._sock.settimeout(_remaining(self._deadline))
            sent = self._sock.send(view)
            view = view[sent:]

    def recv_into(self, buffer: Any) -> int:
        self._sock.settimeout(_remaining(self._deadline))
        return self._sock.recv_into(buffer)

    def makefile(self, mode: str = "rb", *_: Any, **__: Any) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self))

    def close(self) -> None:
        self._sock.close()


class _DeadlineReader(io.RawIOBase):
    def __init__(self, sock: _DeadlineSocket) -> None:
        self._socket = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._socket.recv_into(buffer)
