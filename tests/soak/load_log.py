"""Reading the locust run's per-request log (tests/soak/locustfile.py writes it) and
judging it offline against the usage plans: was each 429 one the plan called for, and did
each token bucket let through what its rate and burst promise?

The gateway decides a request at one instant between the client's send (`start`) and its
receipt of the answer (`end`); the log cannot say when. So every judgement here takes the
view most favourable to the gateway that is consistent with those intervals: a refusal is
unjustified only if the bucket held a token whenever the decisions could have happened.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

    from numpy.typing import NDArray

THROTTLED = "Too Many Requests"
QUOTA_EXCEEDED = "Limit Exceeded"
TIMING_TOLERANCE_S = 0.005
"""Each logged interval is widened by this much on both sides: the client and the gateway
read the same clock (time.time(), one machine), so this only absorbs rounding."""


@dataclass(frozen=True)
class Request:
    tenant: str
    plan: str
    route: str
    start: float
    end: float
    status: int
    message: str | None = None
    error: str | None = None

    @property
    def admitted(self) -> bool:
        # Every key in the run is valid and on a plan: only the usage plan refuses (429).
        return self.status != 429


def read_log(path: Path) -> list[Request]:
    requests = [
        Request(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()
    ]
    return sorted(requests, key=lambda request: request.start)


@dataclass(frozen=True)
class Bucket:
    """One token bucket's traffic: the requests it was asked about, and its limits."""

    rate: float
    burst: int
    requests: list[Request]

    @property
    def admitted(self) -> list[Request]:
        return [request for request in self.requests if request.admitted]

    @property
    def span_s(self) -> float:
        """From the first request's send to the last one's answer: the bucket is created
        full at the first decision, and every decision lies inside this span."""
        return max(r.end for r in self.requests) - min(r.start for r in self.requests)

    @property
    def offered_per_s(self) -> float:
        return len(self.requests) / self.span_s

    @property
    def most_admitted(self) -> float:
        """What a bucket that starts full at `burst` and regains `rate` a second can let
        through over the span: expected admitted = rate x span + burst. A client that keeps
        asking faster than `rate` never lets the bucket fill up, so no token is wasted and
        a saturated bucket admits this many, less the last fraction of a token."""
        return self.rate * self.span_s + self.burst

    def lowest_levels(self, refusals: Iterable[Request]) -> NDArray[np.float64]:
        """For each refusal, the lowest level this bucket could have had when the gateway
        decided it.

        level(t) = min over s <= t of (burst + rate x (t - s) - admitted in [s, t)), the
        bucket starting full. The refusal was decided at some t in [start, end]; an
        admission counted in [s, t) may be any one sent before `end` and answered at or
        after s; and rate x (t - s) >= rate x max(0, start - s). Counting every such
        admission and the least refill gives a bound no real ordering can go below."""
        admitted_starts = np.array([r.start for r in self.admitted]) - TIMING_TOLERANCE_S
        admitted_ends = np.array([r.end for r in self.admitted]) + TIMING_TOLERANCE_S
        order = np.argsort(admitted_ends)
        admitted_starts, admitted_ends = admitted_starts[order], admitted_ends[order]
        levels = []
        for refusal in refusals:
            earliest = refusal.start - TIMING_TOLERANCE_S
            latest = refusal.end + TIMING_TOLERANCE_S
            # Still sorted by answer time: ends[k] is s, and len - k admissions end >= s.
            ends = admitted_ends[admitted_starts < latest]
            counted = len(ends) - np.arange(len(ends))
            # s at or after the earliest decision: no refill counted, every admission ending
            # after it may fall in [s, t).
            level = float(self.burst - np.count_nonzero(ends >= earliest))
            before = ends < earliest
            if before.any():
                refilled = self.rate * (earliest - ends[before])
                level = min(level, float(np.min(self.burst + refilled - counted[before])))
            levels.append(float(level))
        return np.array(levels, dtype=np.float64)


def throttle_levels(buckets: list[Bucket], refusals: list[Request]) -> NDArray[np.float64]:
    """For each "Too Many Requests", the lowest level any of the request's buckets (the
    key's, and the route's where the plan throttles it) could have had: at 1 or more, no
    bucket can have been empty, and the refusal is unjustified."""
    if not refusals:
        return np.zeros(0)
    levels: NDArray[np.float64] = np.min(
        [bucket.lowest_levels(refusals) for bucket in buckets], axis=0
    )
    return levels


def unjustified_quota_refusals(
    requests: list[Request], limit: int, refusals: list[Request]
) -> list[Request]:
    """The "Limit Exceeded" answers given before the key can have used its whole quota:
    at most the admissions sent before the refusal's answer counted when it was decided."""
    admitted_starts = np.sort([r.start for r in requests if r.admitted])
    return [
        refusal
        for refusal in refusals
        if np.searchsorted(admitted_starts, refusal.end + TIMING_TOLERANCE_S) < limit
    ]
