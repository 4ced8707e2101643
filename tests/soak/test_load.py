"""Load against `stratoserve dev`: locust (headless, in its own process) drives five
tenants on different usage plans for a minute on 127.0.0.1, and the per-request log is
judged offline against the plans.

- free (rate 5, burst 10) offered ~5x its rate, team (20/40) ~3x: throttled to within 5%
  of rate x span + burst, and never above it;
- trial (5/10, a quota of 150) runs out of quota half way through;
- metered (50/50, but /v2/predict/digits throttled to 5/10) is held by its route throttle;
- pro (the declaration's generous plan) at a tenth of its rate: never a 429.

Every 429 must be justified: "Too Many Requests" only when a bucket of the request could
have been empty, "Limit Exceeded" only once the quota could have been used up (see
load_log.py for how the intervals are read). No 5xx, no connection error. The gateway's
own usage counters (`stratoserve keys usage`) must agree with the log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from stratoserve.declaration import load_declaration
from tests.conftest import DECLARATION_FILE, ROOT
from tests.integration.stratoserve.local.dev_stack import (
    KEY,
    Stack,
    create_key,
    start_stack,
    stop_stack,
)
from tests.soak.load_log import (
    QUOTA_EXCEEDED,
    THROTTLED,
    Bucket,
    Request,
    read_log,
    throttle_levels,
    unjustified_quota_refusals,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    import numpy as np
    from numpy.typing import NDArray

    from stratoserve.declaration.schema import PlanSpec

pytestmark = pytest.mark.soak

RUN_S = 60
LOCUSTFILE = ROOT / "tests" / "soak" / "locustfile.py"
ROUTE_THROTTLED = "/v2/predict/digits"
QUOTA_LIMIT = 150
ADMITTED_TOLERANCE = 0.05
"""A saturated bucket's admissions may differ from rate x span + burst by this fraction."""
SATURATED = 1.5
"""A throttled tenant is offered at least this many times its rate (checked, not assumed)."""


@dataclass(frozen=True)
class Load:
    """One tenant's offered load: `users` clients, each `per_second` requests a second,
    going through `routes` in turn (names from the locustfile's ROUTES)."""

    tenant: str
    plan: str
    users: int
    per_second: float
    routes: tuple[str, ...] = ("predict", "models")


LOADS = (
    Load("acme", "free", users=1, per_second=30),
    Load("globex", "team", users=3, per_second=20),
    Load("initech", "trial", users=1, per_second=16),
    Load("umbrella", "metered", users=2, per_second=12, routes=("predict",) * 3 + ("models",)),
    Load("hooli", "pro", users=3, per_second=4),
)


def _quota_offset(now: datetime) -> int:
    """A WEEK quota's offset (0 = Sunday) whose period began days ago and ends days from
    now: a DAY quota would reset mid-run if the minute straddled midnight UTC."""
    return ((now + timedelta(days=3)).weekday() + 1) % 7


def _test_declaration(state: Path, models: Path) -> Path:
    """stratoserve.toml with the built models, and three more plans on digits: team (a
    mid plan), trial (a small quota that runs out) and metered (a route throttle)."""
    text = DECLARATION_FILE.read_text()
    changes = {'models_dir = "build/models"': f'models_dir = "{models}"'}
    for old, new in changes.items():
        assert old in text, f"stratoserve.toml changed: update this test's {old!r}"
        text = text.replace(old, new)
    offset = _quota_offset(datetime.now(UTC))
    text += f"""
[plans.team]
rate = 20
burst = 40
models = ["digits"]

[plans.trial]
rate = 5
burst = 10
quota = {{ limit = {QUOTA_LIMIT}, period = "WEEK", offset = {offset} }}
models = ["digits"]

[plans.metered]
rate = 50
burst = 50
throttles = {{ "{ROUTE_THROTTLED}" = {{ rate = 5, burst = 10 }} }}
models = ["digits"]
"""
    path = state / "stratoserve.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def stack(built_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state = tmp_path_factory.mktemp("load-state")
    running = start_stack(state, _test_declaration(state, built_models))
    yield running
    stop_stack(running)


def _run_locust(stack: Stack, loads: tuple[Load, ...], directory: Path) -> Path:
    """locust headless for RUN_S seconds; the path of its per-request log."""
    with ThreadPoolExecutor(max_workers=len(loads)) as pool:  # a CLI process each
        issued = pool.map(lambda load: create_key(stack, load.tenant, load.plan), loads)
        tenants = {key["tenant"]: {"plan": key["plan"], "key": key["key"]} for key in issued}
    slots = [
        {"tenant": load.tenant, "per_second": load.per_second, "routes": list(load.routes)}
        for load in loads
        for _ in range(load.users)
    ]
    plan_file = directory / "load-plan.json"
    log = directory / "requests.jsonl"
    env = {
        **os.environ,
        "STRATOSERVE_SOAK_LOAD_PLAN": str(plan_file),
        "STRATOSERVE_SOAK_LOAD_LOG": str(log),
    }
    users = str(len(slots))
    locust = [
        str(Path(sys.executable).parent / "locust"),
        *("-f", str(LOCUSTFILE), "--headless", "--only-summary", "--loglevel", "WARNING"),
        *("--host", stack.url, "--users", users, "--spawn-rate", users),
        # A user stopped mid-request would leave an admission out of the log.
        *("--run-time", f"{RUN_S}s", "--stop-timeout", "10"),
    ]
    plan_file.write_text(json.dumps({"tenants": tenants, "slots": slots}))
    try:
        finished = subprocess.run(
            locust, cwd=ROOT, env=env, capture_output=True, text=True, timeout=RUN_S + 40
        )
    finally:
        plan_file.unlink()  # it holds the keys
    assert log.exists(), f"locust wrote no log:\n{finished.stderr[-3000:]}"
    # locust exits 1 on a failure (anything but 200 or 429): the log says which.
    assert finished.returncode in (0, 1), finished.stderr[-3000:]
    return log


def _usage(stack: Stack, expected: Counter[str]) -> dict[str, Any]:
    """`stratoserve keys usage --json`, once it counts `expected` admissions per tenant
    (the gateway writes its usage file every 2 s), or after 15 s as it then stands."""
    env = {**os.environ, "STRATOSERVE_STATE_DIR": str(stack.state)}
    if stack.config is not None:
        env["STRATOSERVE_CONFIG"] = str(stack.config)
    deadline = time.monotonic() + 15
    while True:
        answer = subprocess.run(
            [sys.executable, "-m", "stratoserve.cli", "keys", "usage", "--json"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert answer.returncode == 0, answer.stderr
        usage: dict[str, Any] = json.loads(answer.stdout)
        counted = {tenant: usage.get(tenant, {}).get("requests") for tenant in expected}
        if counted == dict(expected) or time.monotonic() > deadline:
            return usage
        time.sleep(1)


def _warm(stack: Stack) -> None:
    """Answers from each function the load uses, with the dev key (another tenant), so
    that the run starts on ready environments."""
    for _ in range(3):
        predicted = stack.post("/v2/predict/digits", {"inputs": [[0.0] * 64]})
        assert predicted.status_code == 200, predicted.text
        listed = stack.client.get("/v1/models", headers={"x-api-key": KEY})
        assert listed.status_code == 200, listed.text


@dataclass(frozen=True)
class Tenancy:
    """One tenant's minute: its requests, its plan, and its plan's buckets with the
    traffic each saw ("key" for the key's, a route for each route the plan throttles)."""

    load: Load
    plan: PlanSpec
    requests: list[Request]
    buckets: dict[str, Bucket]

    @classmethod
    def of(cls, load: Load, plan: PlanSpec, requests: list[Request]) -> Tenancy:
        buckets = {"key": Bucket(plan.rate, plan.burst, requests)}
        for route, throttle in plan.throttles.items():
            on_route = [request for request in requests if request.route == route]
            if on_route:  # the gateway creates a bucket at its first request
                buckets[route] = Bucket(throttle.rate, throttle.burst, on_route)
        return cls(load, plan, requests, buckets)

    @property
    def admitted(self) -> int:
        return sum(request.admitted for request in self.requests)

    def refused(self, message: str) -> list[Request]:
        return [r for r in self.requests if r.status == 429 and r.message == message]

    def throttle_levels(self) -> dict[str, NDArray[np.float64]]:
        """Per route, the lowest level each of its "Too Many Requests" could have seen."""
        throttled = self.refused(THROTTLED)
        levels = {}
        for route in sorted({r.route for r in throttled}):
            applicable = [self.buckets["key"]]
            if route in self.buckets:
                applicable.append(self.buckets[route])
            levels[route] = throttle_levels(applicable, [r for r in throttled if r.route == route])
        return levels


@dataclass(frozen=True)
class Run:
    requests: list[Request]
    tenants: dict[str, Tenancy]
    usage: dict[str, Any]
    """`stratoserve keys usage --json` after the run."""

    def since_start(self, request: Request) -> str:
        return f"+{request.start - self.requests[0].start:.3f} s"


@pytest.fixture(scope="module")
def run(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Run:
    assert stack.config is not None
    plans = load_declaration(stack.config).plans
    _warm(stack)
    started = time.monotonic()
    requests = read_log(_run_locust(stack, LOADS, tmp_path_factory.mktemp("load")))
    took = time.monotonic() - started
    silent = {load.tenant for load in LOADS} - {r.tenant for r in requests}
    assert not silent, f"no request logged for {sorted(silent)}"
    tenants = {
        load.tenant: Tenancy.of(
            load, plans[load.plan], [r for r in requests if r.tenant == load.tenant]
        )
        for load in LOADS
    }
    admitted = Counter({name: tenancy.admitted for name, tenancy in tenants.items()})
    run = Run(requests, tenants, _usage(stack, admitted))
    _report(run, took)
    return run


def _report(run: Run, took: float) -> None:
    """The figures, on the terminal with `-s` (no key in them)."""
    print(f"\n{len(run.requests)} requests; keys and locust took {took:.1f} s")
    for name, tenancy in run.tenants.items():
        for bucket_name, bucket in tenancy.buckets.items():
            print(
                f"{name:9} {tenancy.load.plan:8} {bucket_name:18} offered "
                f"{bucket.offered_per_s:5.1f}/s (rate {bucket.rate:g}, burst {bucket.burst}) "
                f"admitted {len(bucket.admitted):5d} of rate x span + burst "
                f"{bucket.most_admitted:7.1f} (span {bucket.span_s:.1f} s)"
            )
        refusals = Counter(r.message for r in tenancy.requests if r.status == 429)
        closest = {
            route: round(float(levels.max()), 2)
            for route, levels in tenancy.throttle_levels().items()
        }
        # The highest of the lowest levels the buckets can have had at a throttle: < 1.
        print(f"{'':9} 429s {dict(refusals)}; highest floor at a throttle {closest}")


def test_every_answer_is_a_200_or_a_usage_plan_429(run: Run) -> None:
    # No 5xx, no 403, and no connection error (status 0) either.
    failures = [r for r in run.requests if r.status not in (200, 429)]
    statuses = Counter(r.status for r in run.requests)
    assert not failures, f"{len(failures)} answers neither 200 nor 429: {statuses}; " + "; ".join(
        f"{r.tenant} {r.route} {r.status} {r.error} at {run.since_start(r)}" for r in failures[:5]
    )
    for name, tenancy in run.tenants.items():
        assert tenancy.buckets["key"].span_s > RUN_S * 0.9, f"{name} stopped early"
        messages = {r.message for r in tenancy.requests if r.status == 429}
        assert messages <= {THROTTLED, QUOTA_EXCEEDED}, name


def test_every_throttle_found_a_bucket_empty(run: Run) -> None:
    for name, tenancy in run.tenants.items():
        for route, levels in tenancy.throttle_levels().items():
            on_route = [r for r in tenancy.refused(THROTTLED) if r.route == route]
            unjustified = [r for r, level in zip(on_route, levels, strict=True) if level >= 1]
            assert not unjustified, (
                f"{name} ({tenancy.load.plan}): {len(unjustified)} of {len(on_route)} "
                f"throttles on {route} while every bucket held a token, the first at "
                f"{run.since_start(unjustified[0])}"
            )


def test_every_limit_exceeded_came_once_the_quota_was_used_up(run: Run) -> None:
    for name, tenancy in run.tenants.items():
        over_quota = tenancy.refused(QUOTA_EXCEEDED)
        if tenancy.plan.quota is None:
            assert not over_quota, name
            continue
        limit = tenancy.plan.quota.limit
        unjustified = unjustified_quota_refusals(tenancy.requests, limit, over_quota)
        assert not unjustified, (
            f"{name}: {len(unjustified)} 'Limit Exceeded' before {limit} admissions, "
            f"the first at {run.since_start(unjustified[0])}"
        )
        assert tenancy.admitted <= limit, name


def test_no_bucket_lets_more_through_than_its_rate_and_burst(run: Run) -> None:
    for name, tenancy in run.tenants.items():
        for bucket_name, bucket in tenancy.buckets.items():
            assert len(bucket.admitted) <= bucket.most_admitted, (name, bucket_name)


@pytest.mark.parametrize(
    ("tenant", "bucket_name"),
    [("acme", "key"), ("globex", "key"), ("umbrella", ROUTE_THROTTLED)],
)
def test_a_saturated_bucket_admits_its_rate(run: Run, tenant: str, bucket_name: str) -> None:
    bucket = run.tenants[tenant].buckets[bucket_name]
    assert bucket.offered_per_s >= SATURATED * bucket.rate
    assert len(bucket.admitted) == pytest.approx(bucket.most_admitted, rel=ADMITTED_TOLERANCE)


def test_the_trial_tenant_is_throttled_then_runs_out_of_quota(run: Run) -> None:
    trial = run.tenants["initech"]
    assert trial.buckets["key"].offered_per_s >= SATURATED * trial.plan.rate
    assert trial.refused(THROTTLED)
    assert trial.refused(QUOTA_EXCEEDED)
    first_over = trial.refused(QUOTA_EXCEEDED)[0]
    # The quota runs out half way through; the bucket then refills and stays full.
    assert first_over.start - trial.requests[0].start < RUN_S * 0.75
    assert trial.admitted == QUOTA_LIMIT
    assert run.usage["initech"]["quota"]["used"] == QUOTA_LIMIT


def test_the_route_throttle_alone_holds_the_metered_tenant(run: Run) -> None:
    metered = run.tenants["umbrella"]
    assert {r.route for r in metered.requests if r.status == 429} == {ROUTE_THROTTLED}
    assert metered.buckets["key"].offered_per_s < metered.plan.rate


def test_the_generous_tenant_is_never_refused(run: Run) -> None:
    generous = run.tenants["hooli"]
    assert generous.buckets["key"].offered_per_s < generous.plan.rate
    assert [r for r in generous.requests if r.status == 429] == []


def test_the_stack_counts_what_the_clients_saw(run: Run) -> None:
    for name, tenancy in run.tenants.items():
        counted = run.usage.get(name, {}).get("requests")
        assert counted == tenancy.admitted, (name, counted, tenancy.admitted)


def _sequential(*outcomes: int | str) -> list[Request]:
    """One client's requests, every 100 ms, answered in 10 ms: 200, or a 429's message."""
    return [
        Request("t", "p", "/r", 0.1 * n, 0.1 * n + 0.01, 200)
        if outcome == 200
        else Request("t", "p", "/r", 0.1 * n, 0.1 * n + 0.01, 429, str(outcome))
        for n, outcome in enumerate(outcomes)
    ]


def test_the_offline_judge_flags_a_throttle_with_a_token_left() -> None:
    # rate 1, burst 2: the third request finds ~0.2 tokens left, the second ~1.1.
    justified = _sequential(200, 200, THROTTLED)
    unjustified = _sequential(200, THROTTLED, 200)

    assert throttle_levels([Bucket(1.0, 2, justified)], justified[2:])[0] < 1
    assert throttle_levels([Bucket(1.0, 2, unjustified)], unjustified[1:2])[0] >= 1


def test_the_offline_judge_flags_a_limit_exceeded_below_the_limit() -> None:
    requests = _sequential(200, 200, QUOTA_EXCEEDED)

    assert unjustified_quota_refusals(requests, 2, requests[2:]) == []
    assert unjustified_quota_refusals(requests, 3, requests[2:]) == requests[2:]


def test_the_locustfile_is_never_imported_here() -> None:
    # gevent's monkey-patching would reach into this process and the stack's client.
    assert "locust" not in sys.modules
    assert "gevent" not in sys.modules
