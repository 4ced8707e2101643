"""The load of tests/soak/test_load.py, run by locust in a process of its own (gevent
patches the modules it imports, so pytest never imports this file).

The test names two files through the environment: STRATOSERVE_SOAK_LOAD_PLAN, the JSON
load it wants (its tenants, with their keys, and one slot per simulated user: which
tenant, how many requests a second, which routes in turn), and STRATOSERVE_SOAK_LOAD_LOG,
where every request becomes one JSON line: tenant, plan, route, start and end (epoch
seconds, the clock the gateway's token buckets read), status, and the body's message for a
429. Keys are read, sent and never written anywhere.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path
from typing import Any

from locust import FastHttpUser, task

PLAN_ENV = "STRATOSERVE_SOAK_LOAD_PLAN"
LOG_ENV = "STRATOSERVE_SOAK_LOAD_LOG"

# A digits image: 64 pixels, 0..16. The cheapest predict there is.
DIGITS_BODY = {"inputs": [[0.0] * 64]}
ROUTES = {
    "predict": ("POST", "/v2/predict/digits"),
    "models": ("GET", "/v1/models"),
}

_load: dict[str, Any] = json.loads(Path(os.environ[PLAN_ENV]).read_text())
# Users start one after another in one process: each takes the next slot.
_slots = itertools.cycle(_load["slots"])
# Open for the whole run, line-buffered: each request is on disk once it is answered.
_log = Path(os.environ[LOG_ENV]).open("a", buffering=1)  # noqa: SIM115


class Tenant(FastHttpUser):
    """One simulated client of one tenant: a request every 1/per_second s, or at once
    after a slower answer (no catching up: a stalled client offers less, never a burst)."""

    connection_timeout = 10.0
    network_timeout = 20.0

    def on_start(self) -> None:
        slot = next(_slots)
        self.tenant: str = slot["tenant"]
        self.plan: str = _load["tenants"][self.tenant]["plan"]
        self.headers = {"x-api-key": _load["tenants"][self.tenant]["key"]}
        self.interval = 1.0 / float(slot["per_second"])
        self.routes = itertools.cycle(slot["routes"])
        self.started = time.monotonic()

    def wait_time(self) -> float:
        return max(0.0, self.started + self.interval - time.monotonic())

    @task
    def call(self) -> None:
        self.started = time.monotonic()
        route = next(self.routes)
        method, path = ROUTES[route]
        body = DIGITS_BODY if method == "POST" else None
        start = time.time()
        with self.client.request(
            method, path, json=body, headers=self.headers, catch_response=True
        ) as response:
            end = time.time()
            status = response.status_code or 0
            record: dict[str, Any] = {
                "tenant": self.tenant,
                "plan": self.plan,
                "route": path,
                "start": start,
                "end": end,
                "status": status,
            }
            if status == 429:
                record["message"] = _message(response.text)
            if status in (200, 429):
                response.success()
            else:
                # status 0: no answer at all (refused, reset, timed out)
                record["error"] = str(response.error or response.text)[:300]
                response.failure(f"{method} {path}: {status}")
            _log.write(json.dumps(record) + "\n")


def _message(text: str | None) -> str | None:
    try:
        message = json.loads(text or "").get("message")
    except (ValueError, AttributeError):
        return None
    return message if isinstance(message, str) else None
