"""Usage plans as API Gateway enforces them: per API key a token bucket (plus optional
per-route buckets declared by the plan) and a quota per UTC calendar period.

API Gateway checks a request against the plan's per-method throttle, then the key-level
throttle, then the quota, and a refused request costs nothing: tokens and quota are only
taken once every check has passed.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Literal, get_args

from stratoserve.declaration.schema import QUOTA_MAX_OFFSET

Clock = Callable[[], float]
Period = Literal["DAY", "WEEK", "MONTH"]
Decision = Literal["admitted", "throttled", "quota_exceeded"]


@dataclass(frozen=True)
class Throttle:
    rate: float
    burst: int

    def __post_init__(self) -> None:
        # `not > 0` also refuses NaN; an infinite rate would make the refill arithmetic NaN.
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise ValueError(f"throttle rate must be a finite number > 0, got {self.rate!r}")
        if self.burst < 1:
            raise ValueError(f"throttle burst must be >= 1, got {self.burst!r}")


@dataclass(frozen=True)
class Quota:
    limit: int
    period: Period
    offset: int = 0

    def __post_init__(self) -> None:
        if self.period not in get_args(Period):
            raise ValueError(f"quota period must be DAY, WEEK or MONTH, got {self.period!r}")
        if self.limit < 0:
            raise ValueError(f"quota limit must be >= 0, got {self.limit!r}")
        highest = QUOTA_MAX_OFFSET[self.period]
        if not 0 <= self.offset <= highest:
            raise ValueError(
                f"quota offset for a {self.period} period must be in 0..{highest}, "
                f"got {self.offset!r}"
            )

    def period_start(self, now: float) -> float:
        """Epoch seconds of the start of the period that contains `now`."""
        return _midnight(self._start_day(_utc_day(now)))

    def next_start(self, now: float) -> float:
        """Epoch seconds at which the period after the one containing `now` begins."""
        start = self._start_day(_utc_day(now))
        if self.period == "DAY":
            return _midnight(start + timedelta(days=1))
        if self.period == "WEEK":
            return _midnight(start + timedelta(days=7))
        return _midnight(_add_month(start))

    def _start_day(self, day: date) -> date:
        if self.period == "DAY":
            return day
        if self.period == "WEEK":
            # date.weekday() counts from Monday; API Gateway's offsets count from Sunday.
            since_sunday = (day.weekday() + 1) % 7
            return day - timedelta(days=(since_sunday - self.offset) % 7)
        first = 1 + self.offset
        if day.day >= first:
            return day.replace(day=first)
        return _sub_month(day.replace(day=first))


def _utc_day(now: float) -> date:
    return datetime.fromtimestamp(now, UTC).date()


def _midnight(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


def _add_month(day: date) -> date:
    # Only called with day <= 28, which exists in every month.
    if day.month == 12:
        return day.replace(year=day.year + 1, month=1)
    return day.replace(month=day.month + 1)


def _sub_month(day: date) -> date:
    if day.month == 1:
        return day.replace(year=day.year - 1, month=12)
    return day.replace(month=day.month - 1)


@dataclass(frozen=True)
class PlanLimits:
    throttle: Throttle
    quota: Quota | None = None
    route_throttles: Mapping[str, Throttle] = field(default_factory=dict)


class TokenBucket:
    """Holds up to `burst` tokens and regains `rate` per second; starts full, like API
    Gateway, so a fresh key may send its whole burst at once."""

    def __init__(self, throttle: Throttle, now: float) -> None:
        self.throttle = throttle
        self._tokens = float(throttle.burst)
        self._last = now

    def available(self, now: float) -> float:
        self._refill(now)
        return self._tokens

    def take(self, now: float) -> None:
        self._refill(now)
        if self._tokens < 1:
            raise RuntimeError("no token left to take; check available() first")
        self._tokens -= 1

    def _refill(self, now: float) -> None:
        # A wall clock stepped backwards must neither refill nor let the next reading refill
        # twice over the same interval.
        if now <= self._last:
            return
        gained = (now - self._last) * self.throttle.rate
        self._tokens = min(float(self.throttle.burst), self._tokens + gained)
        self._last = now


_BucketKey = tuple[str, str | None]


class UsageLimiter:
    """All buckets and quota counters of every key, one instance per gateway."""

    def __init__(
        self,
        clock: Clock = time.time,
        counters: Mapping[str, tuple[float, int]] | None = None,
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        # (key_id, None) is the key-level bucket, (key_id, route) a per-route one.
        self._buckets: dict[_BucketKey, TokenBucket] = {}
        self._quota: dict[str, tuple[float, int]] = dict(counters or {})

    def admit(self, key_id: str, limits: PlanLimits, route: str) -> Decision:
        with self._lock:
            # Read the clock under the lock so each bucket sees time move forward only.
            now = self._clock()
            route_throttle = limits.route_throttles.get(route)
            route_bucket = (
                None
                if route_throttle is None
                else self._bucket((key_id, route), route_throttle, now)
            )
            if route_bucket is not None and route_bucket.available(now) < 1:
                return "throttled"
            key_bucket = self._bucket((key_id, None), limits.throttle, now)
            if key_bucket.available(now) < 1:
                return "throttled"
            quota = limits.quota
            if quota is not None and self._used(key_id, quota, now) >= quota.limit:
                return "quota_exceeded"
            if route_bucket is not None:
                route_bucket.take(now)
            key_bucket.take(now)
            if quota is not None:
                self._count(key_id, quota, now)
            return "admitted"

    def quota_used(self, key_id: str, limits: PlanLimits) -> int:
        if limits.quota is None:
            return 0
        with self._lock:
            return self._used(key_id, limits.quota, self._clock())

    def remaining(self, key_id: str, limits: PlanLimits) -> int | None:
        if limits.quota is None:
            return None
        return max(limits.quota.limit - self.quota_used(key_id, limits), 0)

    def counters(self) -> dict[str, tuple[float, int]]:
        with self._lock:
            return dict(self._quota)

    def _bucket(self, bucket_key: _BucketKey, throttle: Throttle, now: float) -> TokenBucket:
        bucket = self._buckets.get(bucket_key)
        # A changed plan gets a fresh bucket instead of keeping the old capacity and rate.
        if bucket is None or bucket.throttle != throttle:
            bucket = TokenBucket(throttle, now)
            self._buckets[bucket_key] = bucket
        return bucket

    def _used(self, key_id: str, quota: Quota, now: float) -> int:
        start, used = self._quota.get(key_id, (math.nan, 0))
        # A counter from another period (or another period layout) no longer counts.
        return used if start == quota.period_start(now) else 0

    def _count(self, key_id: str, quota: Quota, now: float) -> None:
        used = self._used(key_id, quota, now)
        self._quota[key_id] = (quota.period_start(now), used + 1)
