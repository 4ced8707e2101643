"""Job callbacks: when a job finishes, its `callback_url` gets the job (as GET shows it) in
a POST, signed with HMAC-SHA256 under the tenant's own secret, retried with backoff.

The signature header reads `t=<unix seconds>,v1=<hex digest of "<t>.<body>">`, as Stripe's
webhooks do: a receiver recomputes it with its secret and refuses old timestamps. Each
tenant's secret is derived from the project's signing key, so none is stored per tenant;
`stratoserve jobs callback-secret --tenant T` shows it to the operator (from the local
stack's key; the deployed key lives in Secrets Manager).

Where a callback may go is checked twice: when the job is submitted (`check_url`) and
right before each POST, with the host name resolved, so a name pointing into the
account's network is refused too; redirects are never followed.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from collections.abc import Callable

SIGNATURE_HEADER = "x-stratoserve-signature"
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
TOLERANCE_S = 300
"""How old a signed timestamp a receiver should accept."""


class CallbackRefused(ValueError):
    """A callback URL stratoserve will not POST to; the message says why."""


def check_url(url: str, *, allow_loopback: bool = False) -> str:
    """https to a public host; plain http and loopback only where `allow_loopback` (the
    local stack). Host names are checked again, resolved, when the callback is sent."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (parsed on access: a bad port raises only here)
    except ValueError as error:  # "https://[::1", a port that is not one
        raise CallbackRefused(f"is not a valid URL ({error})") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise CallbackRefused("must be an absolute https:// URL")
    loopback = parts.hostname in LOOPBACK_HOSTS
    if parts.scheme == "http" and not (allow_loopback and loopback):
        raise CallbackRefused("must use https")
    _check_address(parts.hostname, allow_loopback=allow_loopback)
    return url


def _check_address(host: str, *, allow_loopback: bool) -> None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if host in LOOPBACK_HOSTS and not allow_loopback:
            raise CallbackRefused("must not point at this machine") from None
        return  # a name: checked once resolved
    if address.is_loopback and allow_loopback:
        return
    if not address.is_global:
        # The worker would POST from inside the account's network: not to its neighbours.
        raise CallbackRefused("must not point at a private, loopback or link-local address")


def _resolved_check(host: str, *, allow_loopback: bool) -> None:
    """Every address the name resolves to must pass, right before the POST."""
    for *_, sockaddr in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP):
        _check_address(str(sockaddr[0]), allow_loopback=allow_loopback)


def tenant_secret(signing_key: bytes, tenant: str) -> str:
    return hmac.new(signing_key, b"callback-secret:" + tenant.encode(), hashlib.sha256).hexdigest()


def signature(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify(secret: str, header: str, body: bytes, *, now: float | None = None) -> bool:
    """What a receiver does: the signature matches and is recent."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs((now if now is not None else time.time()) - timestamp) > TOLERANCE_S:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), header)


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
    ) -> None:
        self._signing_key = signing_key
        self.allow_loopback = allow_loopback
        self.attempts = attempts
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s
        self._sleep = sleep
        self._clock = clock

    def deliver(self, url: str, tenant: str, body: bytes, *, deadline: float) -> dict[str, Any]:
        """POST `body` until a 2xx, `attempts` times at most and never past `deadline`
        (on the monotonic clock); the outcome is recorded on the job."""
        # Imported here: urllib.request costs a cold start ~15 ms, and most functions
        # never send a callback.
        import urllib.error
        import urllib.request

        try:
            check_url(url, allow_loopback=self.allow_loopback)
            _resolved_check(urlsplit(url).hostname or "", allow_loopback=self.allow_loopback)
        except (CallbackRefused, OSError) as refused:
            return {"delivered": False, "attempts": 0, "error": f"not sent: {refused}"}
        # A redirect would turn the POST into a GET to wherever it points: none followed.
        opener = urllib.request.build_opener(_no_redirects())
        secret = tenant_secret(self._signing_key(), tenant)
        error = ""
        sent = 0
        for attempt in range(1, self.attempts + 1):
            timeout = min(self.timeout_s, deadline - self._clock())
            if timeout <= 0:
                error = f"{error}; out of time" if error else "out of time"
                break
            sent = attempt
            request = urllib.request.Request(
                url,
                data=body,
                method="POST",
                headers={
                    "content-type": "application/json",
                    "user-agent": "stratoserve-callback/1",
                    SIGNATURE_HEADER: signature(secret, int(time.time()), body),
                },
            )
            try:
                with opener.open(request, timeout=timeout) as response:
                    return {"delivered": True, "attempts": attempt, "status": response.status}
            except urllib.error.HTTPError as refused:
                error = f"HTTP {refused.code}"
                if refused.code < 500 and refused.code not in (408, 429):
                    break  # refused, or redirected: asking again will not help
            except (urllib.error.URLError, OSError) as failure:
                error = str(getattr(failure, "reason", failure))
            if attempt == self.attempts:
                break
            pause = self.backoff_s * 2 ** (attempt - 1)
            if self._clock() + pause >= deadline:
                # No time left for the backoff: a retry at once would only hammer the receiver.
                error = f"{error}; out of time"
                break
            self._sleep(pause)
        return {"delivered": False, "attempts": sent, "error": error}


def _no_redirects() -> type:
    import urllib.request

    class NoRedirects(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *_: Any, **__: Any) -> None:
            return None  # the 3xx itself becomes the answer: an HTTPError, not delivered

    return NoRedirects
