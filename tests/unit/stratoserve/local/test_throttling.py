"""Usage plans enforced like API Gateway: token buckets, per-route throttles, quotas on UTC
calendar periods, and no over-admission under concurrency. Time is always a fake clock."""

from __future__ import annotations

import sys
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest

from stratoserve.local.throttling import (
    Decision,
    PlanLimits,
    Quota,
    Throttle,
    TokenBucket,
    UsageLimiter,
)

if TYPE_CHECKING:
    from collections.abc import Callable

KEY = "abcdefghij"
ROUTE = "POST /v1/models/chat/infer"
# Generous enough that only the quota can refuse in the quota tests.
LOOSE = Throttle(rate=1000.0, burst=1000)


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


def admit_n(limiter: UsageLimiter, limits: PlanLimits, n: int, route: str = ROUTE) -> list[str]:
    return [limiter.admit(KEY, limits, route) for _ in range(n)]


def test_a_full_bucket_admits_exactly_burst_at_once() -> None:
    limiter = UsageLimiter(clock=FakeClock(100.0))
    limits = PlanLimits(throttle=Throttle(rate=10.0, burst=25))

    decisions = admit_n(limiter, limits, 26)

    assert decisions[:25] == ["admitted"] * 25
    assert decisions[25] == "throttled"


def test_sustained_overload_is_admitted_at_the_steady_rate() -> None:
    clock = FakeClock(0.0)
    limiter = UsageLimiter(clock=clock)
    throttle = Throttle(rate=50.0, burst=10)
    limits = PlanLimits(throttle=throttle)

    admitted = 0
    for millisecond in range(10_000):
        clock.now = millisecond / 1000
        admitted += limiter.admit(KEY, limits, ROUTE) == "admitted"

    steady_rate = (admitted - throttle.burst) / 10.0
    assert steady_rate == pytest.approx(throttle.rate, rel=0.05)


def test_the_bucket_refills_lazily_and_never_beyond_burst() -> None:
    bucket = TokenBucket(Throttle(rate=2.0, burst=3), now=0.0)
    for _ in range(3):
        bucket.take(0.0)

    assert bucket.available(0.0) == 0
    assert bucket.available(0.5) == pytest.approx(1.0)
    assert bucket.available(60.0) == 3
    # A clock stepped backwards neither refills nor lets later readings refill twice.
    bucket.take(60.0)
    assert bucket.available(30.0) == pytest.approx(2.0)
    assert bucket.available(60.25) == pytest.approx(2.5)


def test_taking_from_an_empty_bucket_is_refused() -> None:
    bucket = TokenBucket(Throttle(rate=1.0, burst=1), now=0.0)
    bucket.take(0.0)

    with pytest.raises(RuntimeError):
        bucket.take(0.0)


@pytest.mark.parametrize(
    ("quota", "now", "start", "next_start"),
    [
        (Quota(10, "DAY"), utc(2024, 3, 10, 23, 59, 59), utc(2024, 3, 10), utc(2024, 3, 11)),
        (Quota(10, "DAY"), utc(2024, 3, 11), utc(2024, 3, 11), utc(2024, 3, 12)),
        # 2024-03-10 is a Sunday: offset 0 weeks start on it, offset 1 weeks on the Monday.
        (Quota(10, "WEEK"), utc(2024, 3, 10, 12), utc(2024, 3, 10), utc(2024, 3, 17)),
        (Quota(10, "WEEK", 1), utc(2024, 3, 10, 12), utc(2024, 3, 4), utc(2024, 3, 11)),
        (Quota(10, "WEEK", 1), utc(2024, 3, 11), utc(2024, 3, 11), utc(2024, 3, 18)),
        (Quota(10, "WEEK", 6), utc(2024, 3, 15, 23), utc(2024, 3, 9), utc(2024, 3, 16)),
        (Quota(10, "MONTH"), utc(2024, 2, 29, 12), utc(2024, 2, 1), utc(2024, 3, 1)),
        (Quota(10, "MONTH"), utc(2024, 12, 31, 23, 59), utc(2024, 12, 1), utc(2025, 1, 1)),
        (Quota(10, "MONTH", 14), utc(2024, 3, 14, 23), utc(2024, 2, 15), utc(2024, 3, 15)),
        (Quota(10, "MONTH", 14), utc(2024, 3, 15), utc(2024, 3, 15), utc(2024, 4, 15)),
        (Quota(10, "MONTH", 14), utc(2025, 1, 10), utc(2024, 12, 15), utc(2025, 1, 15)),
        (Quota(10, "MONTH", 27), utc(2023, 2, 27, 23), utc(2023, 1, 28), utc(2023, 2, 28)),
        (Quota(10, "MONTH", 27), utc(2023, 3, 1), utc(2023, 2, 28), utc(2023, 3, 28)),
    ],
)
def test_quota_periods_follow_api_gateway_utc_boundaries(
    quota: Quota, now: float, start: float, next_start: float
) -> None:
    assert quota.period_start(now) == start
    assert quota.next_start(now) == next_start


def _exhaust_then_probe(quota: Quota, exhaust_at: float, probes: list[float]) -> list[Decision]:
    clock = FakeClock(exhaust_at)
    limiter = UsageLimiter(clock=clock)
    limits = PlanLimits(throttle=LOOSE, quota=quota)
    assert admit_n(limiter, limits, quota.limit) == ["admitted"] * quota.limit
    decisions: list[Decision] = []
    for probe in probes:
        clock.now = probe
        decisions.append(limiter.admit(KEY, limits, ROUTE))
    return decisions


def test_a_day_quota_resets_at_midnight_utc() -> None:
    decisions = _exhaust_then_probe(
        Quota(3, "DAY"),
        utc(2024, 3, 10, 8),
        [utc(2024, 3, 10, 23, 59, 59) + 0.999, utc(2024, 3, 11)],
    )

    assert decisions == ["quota_exceeded", "admitted"]


def test_a_week_quota_with_offset_1_resets_on_monday_not_sunday() -> None:
    decisions = _exhaust_then_probe(
        Quota(2, "WEEK", offset=1),
        utc(2024, 3, 6),  # a Wednesday
        [utc(2024, 3, 10), utc(2024, 3, 10, 23, 59, 59), utc(2024, 3, 11)],
    )

    assert decisions == ["quota_exceeded", "quota_exceeded", "admitted"]


def test_a_month_quota_with_offset_14_resets_on_the_15th() -> None:
    decisions = _exhaust_then_probe(
        Quota(2, "MONTH", offset=14),
        utc(2024, 2, 20),
        [utc(2024, 3, 1), utc(2024, 3, 14, 23, 59, 59), utc(2024, 3, 15)],
    )

    assert decisions == ["quota_exceeded", "quota_exceeded", "admitted"]


def test_a_month_quota_rolls_over_from_december_to_january() -> None:
    decisions = _exhaust_then_probe(
        Quota(2, "MONTH"),
        utc(2024, 12, 2),
        [utc(2024, 12, 31, 23, 59, 59), utc(2025, 1, 1)],
    )

    assert decisions == ["quota_exceeded", "admitted"]


def test_a_february_month_quota_resets_on_the_first_of_march() -> None:
    decisions = _exhaust_then_probe(
        Quota(2, "MONTH"),
        utc(2023, 2, 1),
        [utc(2023, 2, 28, 23, 59, 59), utc(2023, 3, 1)],
    )

    assert decisions == ["quota_exceeded", "admitted"]


def test_an_exhausted_quota_answers_quota_exceeded_even_with_tokens_left() -> None:
    limiter = UsageLimiter(clock=FakeClock(utc(2024, 5, 1, 12)))
    limits = PlanLimits(throttle=Throttle(rate=10.0, burst=50), quota=Quota(5, "DAY"))

    decisions = admit_n(limiter, limits, 7)

    assert decisions == ["admitted"] * 5 + ["quota_exceeded"] * 2
    assert limiter.quota_used(KEY, limits) == 5
    assert limiter.remaining(KEY, limits) == 0


def test_a_route_throttle_limits_only_its_route() -> None:
    limiter = UsageLimiter(clock=FakeClock(0.0))
    limits = PlanLimits(
        throttle=Throttle(rate=10.0, burst=10),
        route_throttles={ROUTE: Throttle(rate=1.0, burst=2)},
    )

    on_route = admit_n(limiter, limits, 3)
    elsewhere = admit_n(limiter, limits, 9, route="GET /v1/models")

    assert on_route == ["admitted", "admitted", "throttled"]
    # The route's two admissions came out of the key bucket too: 8 tokens were left.
    assert elsewhere == ["admitted"] * 8 + ["throttled"]


def test_a_request_refused_by_the_key_bucket_leaves_the_route_bucket_alone() -> None:
    clock = FakeClock(0.0)
    limiter = UsageLimiter(clock=clock)
    limits = PlanLimits(
        throttle=Throttle(rate=1.0, burst=1),
        route_throttles={ROUTE: Throttle(rate=0.1, burst=2)},
    )

    assert admit_n(limiter, limits, 3) == ["admitted", "throttled", "throttled"]
    clock.now = 1.0
    # Had the key-level refusals taken route tokens, the route bucket would be empty here.
    assert limiter.admit(KEY, limits, ROUTE) == "admitted"


def test_a_throttled_request_does_not_count_toward_the_quota() -> None:
    clock = FakeClock(utc(2024, 5, 1, 12))
    limiter = UsageLimiter(clock=clock)
    limits = PlanLimits(
        throttle=Throttle(rate=1.0, burst=2),
        quota=Quota(100, "DAY"),
        route_throttles={ROUTE: Throttle(rate=1.0, burst=1)},
    )

    decisions = admit_n(limiter, limits, 5) + admit_n(limiter, limits, 5, route="GET /v1/models")

    assert decisions.count("admitted") == 2
    assert limiter.quota_used(KEY, limits) == 2
    assert limiter.remaining(KEY, limits) == 98


def test_a_changed_plan_rebuilds_the_bucket() -> None:
    limiter = UsageLimiter(clock=FakeClock(0.0))
    small = PlanLimits(throttle=Throttle(rate=1.0, burst=2))
    large = PlanLimits(throttle=Throttle(rate=1.0, burst=5))

    assert admit_n(limiter, small, 3) == ["admitted", "admitted", "throttled"]
    assert admit_n(limiter, large, 6) == ["admitted"] * 5 + ["throttled"]


def _hammer(limiter: UsageLimiter, limits: PlanLimits, threads: int, each: int) -> list[str]:
    results: list[str] = []
    results_lock = threading.Lock()
    start = threading.Barrier(threads)

    def worker() -> None:
        start.wait()
        mine = [limiter.admit(KEY, limits, ROUTE) for _ in range(each)]
        with results_lock:
            results.extend(mine)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    # Switching threads as often as possible makes an unlocked check-then-take race show up.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    # A worker that died (an unlocked take on an empty bucket raises) leaves results short.
    assert len(results) == threads * each
    return results


def test_concurrent_callers_never_get_more_than_burst() -> None:
    limiter = UsageLimiter(clock=FakeClock(50.0))
    limits = PlanLimits(throttle=Throttle(rate=5.0, burst=100))

    results = _hammer(limiter, limits, threads=8, each=200)

    assert results.count("admitted") == 100
    assert results.count("throttled") == 1500


def test_concurrent_callers_never_get_more_than_the_quota() -> None:
    limiter = UsageLimiter(clock=FakeClock(utc(2024, 5, 1)))
    limits = PlanLimits(throttle=Throttle(rate=5.0, burst=100), quota=Quota(37, "DAY"))

    results = _hammer(limiter, limits, threads=8, each=200)

    assert results.count("admitted") == 37
    # Over-quota requests take no tokens, so every later one is refused by the quota.
    assert results.count("quota_exceeded") == 1600 - 37
    assert limiter.quota_used(KEY, limits) == 37


def test_quota_counters_survive_a_restart() -> None:
    clock = FakeClock(utc(2024, 5, 1, 9))
    limits = PlanLimits(throttle=LOOSE, quota=Quota(10, "DAY"))
    first = UsageLimiter(clock=clock)
    admit_n(first, limits, 4)

    restarted = UsageLimiter(clock=clock, counters=first.counters())

    assert restarted.quota_used(KEY, limits) == 4
    assert admit_n(restarted, limits, 7) == ["admitted"] * 6 + ["quota_exceeded"]


def test_a_counter_from_an_earlier_period_counts_as_zero() -> None:
    clock = FakeClock(utc(2024, 5, 1, 9))
    limits = PlanLimits(throttle=LOOSE, quota=Quota(10, "DAY"))
    first = UsageLimiter(clock=clock)
    admit_n(first, limits, 4)
    snapshot = first.counters()

    clock.now = utc(2024, 5, 2, 0, 0, 1)
    restarted = UsageLimiter(clock=clock, counters=snapshot)

    assert restarted.quota_used(KEY, limits) == 0
    assert restarted.remaining(KEY, limits) == 10


def test_a_plan_without_quota_has_no_remaining() -> None:
    limiter = UsageLimiter(clock=FakeClock(0.0))
    limits = PlanLimits(throttle=LOOSE)
    admit_n(limiter, limits, 3)

    assert limiter.remaining(KEY, limits) is None
    assert limiter.quota_used(KEY, limits) == 0
    assert limiter.counters() == {}


@pytest.mark.parametrize(
    ("build", "names"),
    [
        (lambda: Throttle(rate=0.0, burst=1), ["rate"]),
        (lambda: Throttle(rate=-1.0, burst=1), ["rate"]),
        (lambda: Throttle(rate=float("nan"), burst=1), ["rate"]),
        (lambda: Throttle(rate=float("inf"), burst=1), ["rate"]),
        (lambda: Throttle(rate=1.0, burst=0), ["burst"]),
        (lambda: Quota(10, "DAY", offset=1), ["offset", "DAY"]),
        (lambda: Quota(10, "WEEK", offset=7), ["offset", "WEEK"]),
        (lambda: Quota(10, "WEEK", offset=-1), ["offset", "WEEK"]),
        (lambda: Quota(10, "MONTH", offset=28), ["offset", "MONTH"]),
        (lambda: Quota(-1, "DAY"), ["limit"]),
        (lambda: Quota(10, "YEAR", offset=0), ["period"]),  # type: ignore[arg-type]
    ],
)
def test_invalid_settings_are_refused_naming_the_field(
    build: Callable[[], object], names: list[str]
) -> None:
    with pytest.raises(ValueError) as refused:
        build()
    for name in names:
        assert name in str(refused.value)


def test_the_largest_offsets_are_accepted() -> None:
    assert Quota(1, "WEEK", offset=6).offset == 6
    assert Quota(1, "MONTH", offset=27).offset == 27
