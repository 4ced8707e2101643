"""What the local gateway counts: per-tenant usage (requests and model compute time, the
seed of cost-aware quotas) and Prometheus metrics at /metrics for a local Prometheus and
Grafana.

Usage and quota counters are written to `.stratoserve/usage.json` every few seconds and at
shutdown, so `stratoserve keys usage` can read them and a restart keeps them.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily

if TYPE_CHECKING:
    from collections.abc import Iterator

    from prometheus_client.metrics_core import Metric

    from stratoserve.local.throttling import PlanLimits, UsageLimiter

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass(frozen=True)
class Exchange:
    """One request as the gateway saw it."""

    route: str
    status: int
    seconds: float
    tenant: str | None = None
    function: str | None = None
    model: str | None = None
    version: str | None = None
    model_ms: float | None = None
    init_ms: float | None = None
    admitted: bool = False
    """Passed the key and plan checks: what API Gateway counts against the quota."""


class Meter:
    def __init__(self, restored: dict[str, Any] | None = None) -> None:
        restored = restored or {}
        self.usage: dict[str, dict[str, float]] = {
            tenant: {"requests": figures["requests"], "model_ms": figures["model_ms"]}
            for tenant, figures in restored.get("tenants", {}).items()
        }
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "stratoserve_requests",
            "Requests answered by the local gateway, 403 and 429 included.",
            ["tenant", "route", "status"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "stratoserve_request_duration_seconds",
            "Gateway latency per route, from request to response.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._model = Histogram(
            "stratoserve_model_duration_seconds",
            "Model compute time per model and version (the function's Server-Timing).",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._cold_starts = Counter(
            "stratoserve_cold_starts",
            "Execution environments started, per function.",
            ["function"],
            registry=self.registry,
        )
        self._init = Histogram(
            "stratoserve_init_duration_seconds",
            "Init time of new execution environments (imports and model loads), per function.",
            ["function"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def record(self, exchange: Exchange) -> None:
        tenant = exchange.tenant or "-"
        self._requests.labels(tenant, exchange.route, str(exchange.status)).inc()
        self._latency.labels(exchange.route).observe(exchange.seconds)
        if exchange.model and exchange.model_ms is not None:
            self._model.labels(exchange.model, exchange.version or "-").observe(
                exchange.model_ms / 1000
            )
        if exchange.function and exchange.init_ms is not None:
            self._cold_starts.labels(exchange.function).inc()
            self._init.labels(exchange.function).observe(exchange.init_ms / 1000)
        if exchange.tenant and exchange.admitted:
            figures = self.usage.setdefault(exchange.tenant, {"requests": 0, "model_ms": 0.0})
            figures["requests"] += 1
            figures["model_ms"] += exchange.model_ms or 0.0

    def exposition(self, *, tenant: str | None = None, everyone: bool = False) -> bytes:
        """The metrics in Prometheus' text format. Requests per tenant only for `everyone`
        (the stack's token) or that one `tenant` (its key); else summed over tenants, so
        an anonymous scrape learns no tenant's name."""
        if everyone:
            return generate_latest(self.registry)
        view = CollectorRegistry(auto_describe=False)
        view.register(_TenantView(self.registry, tenant))
        return generate_latest(view)


class _TenantView:
    """The meter's metrics with `stratoserve_requests` summed over tenants, or narrowed to
    one tenant."""

    def __init__(self, registry: CollectorRegistry, tenant: str | None) -> None:
        self.registry = registry
        self.tenant = tenant

    def collect(self) -> Iterator[Metric]:
        for family in self.registry.collect():
            if family.name != "stratoserve_requests":
                yield family
                continue
            labels = ["route", "status"] if self.tenant is None else ["tenant", "route", "status"]
            view = CounterMetricFamily(family.name, family.documentation, labels=labels)
            sums: dict[tuple[str, ...], float] = {}
            for sample in family.samples:
                if not sample.name.endswith("_total"):
                    continue  # _created: per series, meaningless for a sum
                if self.tenant is not None and sample.labels["tenant"] != self.tenant:
                    continue
                key = tuple(sample.labels[label] for label in labels)
                sums[key] = sums.get(key, 0.0) + sample.value
            for key, value in sorted(sums.items()):
                view.add_metric(list(key), value)
            yield view


class UsageFile:
    """`.stratoserve/usage.json`: usage per tenant, and each key's quota counter."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "usage.json"

    def load(self) -> dict[str, Any]:
        try:
            content: dict[str, Any] = json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        return content

    def save(
        self,
        meter: Meter,
        limiter: UsageLimiter,
        quotas: dict[str, tuple[str, PlanLimits]],
    ) -> None:
        """`quotas`: for each key's usage id, its tenant and plan limits."""
        now = time.time()
        tenants: dict[str, Any] = {name: dict(figures) for name, figures in meter.usage.items()}
        for usage_id, (tenant, limits) in quotas.items():
            if limits.quota is None:
                continue
            entry = tenants.setdefault(tenant, {"requests": 0, "model_ms": 0.0})
            entry["quota"] = {
                "used": limiter.quota_used(usage_id, limits),
                "limit": limits.quota.limit,
                "period": limits.quota.period,
                "resets_at": time.strftime(
                    "%Y-%m-%dT%H:%M:%SZ", time.gmtime(limits.quota.next_start(now))
                ),
            }
        content = {
            "tenants": tenants,
            "counters": {key: list(value) for key, value in limiter.counters().items()},
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", dir=self.path.parent, prefix=".usage-", delete=False
        ) as temporary:
            temporary.write(json.dumps(content, indent=2))
        Path(temporary.name).replace(self.path)
