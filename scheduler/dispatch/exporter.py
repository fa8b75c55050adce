"""The dispatcher's own HTTP exporter: ``/metrics`` and ``/healthz`` on a port of its own.

With several API replicas, the store-derived families (queue depth, batches, ledger totals) are
exported ONCE, here (``GRIDSHIFT_METRICS_STORE=false`` on the replicas), so summing ``/metrics``
over all scrape targets counts every batch once. It also carries the dispatcher's own state
(ticks by outcome, the age of the last good tick) and the process families; ``/healthz``
answers 503 when no tick has succeeded for ``stale_after_s`` (the compose healthcheck).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker

from scheduler.review.metrics import make_registry


@dataclass
class DispatchState:
    """What the tick loop reports about itself (thread-safe enough: single writer)."""

    started: float = field(default_factory=time.monotonic)
    ticks_ok: int = 0
    ticks_failed: int = 0
    last_ok: float | None = None
    last_error: str | None = None
    #: the planner thread's state (``PlannerSupervisor.health``) when it runs in this process
    planner: Callable[[], dict[str, Any]] | None = None

    def record(self, error: BaseException | None = None) -> None:
        """Book one tick: good, or failed with ``error``."""
        if error is None:
            self.ticks_ok += 1
            self.last_ok = time.monotonic()
        else:
            self.ticks_failed += 1
            self.last_error = f"{type(error).__name__}: {error}"

    def last_ok_age_s(self) -> float:
        """Seconds since the last good tick (since start when there was none)."""
        return time.monotonic() - (self.last_ok if self.last_ok is not None else self.started)


class DispatchCollector(Collector):
    """``gridshift_dispatch_ticks_total{outcome}`` and ``..._last_tick_age_seconds``."""

    def __init__(self, state: DispatchState) -> None:
        self.state = state

    def describe(self) -> list[Metric]:
        """Nothing up front: values are read at scrape time."""
        return []

    def collect(self) -> Iterator[Metric]:
        """The dispatcher's tick counters and the age of its last good tick."""
        ticks = CounterMetricFamily(
            "gridshift_dispatch_ticks", "Dispatch ticks, by outcome.", labels=["outcome"]
        )
        ticks.add_metric(["ok"], self.state.ticks_ok)
        ticks.add_metric(["failed"], self.state.ticks_failed)
        yield ticks
        age = GaugeMetricFamily(
            "gridshift_dispatch_last_tick_age_seconds",
            "Seconds since the dispatcher's last successful tick (since start if none).",
        )
        age.add_metric([], self.state.last_ok_age_s())
        yield age
        if self.state.planner is not None:
            yield from _planner_metrics(self.state.planner())


def _planner_metrics(health: dict[str, Any]) -> Iterator[Metric]:
    """The planner thread's families (``PlannerSupervisor.health``)."""
    up = GaugeMetricFamily(
        "gridshift_planner_up",
        "1 while the dispatcher's planner thread runs and is planning or on standby (another "
        "planner holds the lock), 0 when dead or failing on the database.",
    )
    up.add_metric([], 1.0 if health["up"] else 0.0)
    yield up
    holding = GaugeMetricFamily(
        "gridshift_planner_lock_held",
        "1 while this planner holds the planner lock (checked with the server).",
    )
    holding.add_metric([], 1.0 if health["holding_lock"] else 0.0)
    yield holding
    for name, key, doc in (
        ("gridshift_planner_restarts", "restarts", "Planner threads restarted by the dispatcher."),
        ("gridshift_planner_lock_losses", "lock_losses", "Times the planner lost its lock."),
    ):
        counter = CounterMetricFamily(name, doc)
        counter.add_metric([], float(health[key]))
        yield counter


def dispatcher_registry(
    sessions: sessionmaker[Session] | None, state: DispatchState
) -> CollectorRegistry:
    """The store families (when ``sessions``), the process families and the tick state."""
    registry = make_registry(sessions, process=True)
    registry.register(DispatchCollector(state))
    return registry


def start_exporter(
    registry: CollectorRegistry,
    state: DispatchState,
    *,
    host: str,
    port: int,
    stale_after_s: float,
) -> ThreadingHTTPServer:
    """Serve ``/metrics`` and ``/healthz`` on ``host:port`` from a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._answer(200, CONTENT_TYPE_LATEST, generate_latest(registry))
            elif path == "/healthz":
                age = state.last_ok_age_s()
                healthy = age <= stale_after_s
                body: dict[str, Any] = {
                    "status": "ok" if healthy else "stale",
                    "last_tick_age_s": round(age, 1),
                    "stale_after_s": stale_after_s,
                    "ticks_ok": state.ticks_ok,
                    "ticks_failed": state.ticks_failed,
                    "last_error": state.last_error,
                }
                if state.planner is not None:
                    body["planner"] = state.planner()
                self._answer(200 if healthy else 503, "application/json", json.dumps(body).encode())
            else:
                self._answer(404, "text/plain", b"not found: try /metrics or /healthz\n")

        def _answer(self, code: int, content_type: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            """Scrapes every few seconds: no access log."""

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="dispatch-exporter", daemon=True).start()
    return server
