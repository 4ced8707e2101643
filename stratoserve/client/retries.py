"""When the client tries a request again, and how long it waits first. Shared by the sync
and async clients.

Retried: a connection that failed or timed out, 429 "Too Many Requests" (the plan's rate:
a later request is admitted), 502, 503 and 504 (the service or AWS briefly away). Not
retried: 429 "Limit Exceeded" (the quota is spent until the period ends), any other 4xx
(the request itself is wrong), 500 (a bug does not go away). Every POST carries an
Idempotency-Key, made up by the client where the caller gave none: a retry whose first try
did reach the API then names the same job instead of queuing another.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

RETRIED_STATUSES = frozenset({429, 502, 503, 504})
QUOTA_MESSAGE = "Limit Exceeded"


@dataclass(frozen=True)
class Retries:
    attempts: int = 3
    """Tries in all (1: never retry)."""
    first_s: float = 0.5
    most_s: float = 8.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"retries: attempts must be >= 1, got {self.attempts!r}")

    def next_delay(self, attempt: int, answer: httpx.Response | None) -> float | None:
        """After try number `attempt` (0: the first) ended in `answer` (None: the connection
        failed), seconds to wait before trying again, or None: it is final."""
        if attempt + 1 >= self.attempts:
            return None
        if answer is not None and not retryable(answer):
            return None
        return self.delay(attempt, answer)

    def delay(self, attempt: int, answer: httpx.Response | None) -> float:
        """Seconds before try `attempt + 1`: the answer's Retry-After where it has one
        (capped at most_s), else exponential backoff with full jitter (many clients
        throttled at once must not come back at once)."""
        waited = retry_after(answer) if answer is not None else None
        if waited is not None:
            return min(waited, self.most_s)
        return random.uniform(0, min(self.most_s, self.first_s * 2**attempt))


def retryable(answer: httpx.Response) -> bool:
    if answer.status_code not in RETRIED_STATUSES:
        return False
    return answer.status_code != 429 or _message(answer) != QUOTA_MESSAGE


def retry_after(answer: httpx.Response) -> float | None:
    value = answer.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:  # "-0000": RFC 5322's "UTC, source unknown"
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


def _message(answer: httpx.Response) -> Any:
    try:
        body = answer.json()
    except ValueError:
        return None
    return body.get("message") if isinstance(body, dict) else None
