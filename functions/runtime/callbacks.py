"""Job callbacks: when a job finishes, its `callback_url` gets the job (as GET shows it) in
a POST, signed with HMAC-SHA256 under the tenant's own secret, retried with backoff.

The signature header reads `t=<unix seconds>,v1=<hex digest of "<t>.<body>">`, as Stripe's
webhooks do: a receiver recomputes it with its secret and refuses old timestamps. Each
tenant's secret is derived from the project's signing key, so none is stored per tenant;
`stratoserve jobs callback-secret --tenant T` shows it to the operator.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

SIGNATURE_HEADER = "x-stratoserve-signature"
TOLERANCE_S = 300
"""How old a signed timestamp a receiver should accept."""


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
    ) -> None:
        self._signing_key = signing_key
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
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    return {"delivered": True, "attempts": attempt, "status": response.status}
            except urllib.error.HTTPError as refused:
                error = f"HTTP {refused.code}"
                if 400 <= refused.code < 500 and refused.code not in (408, 429):
                    break  # the receiver refuses it: asking again will not help
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
