"""Prometheus metrics read from the store at scrape time (a custom collector, no global state)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.dispatch.poison import STORAGE_FAULT
from scheduler.domain import ShardStatus
from scheduler.store.ledger import seconds_between
from scheduler.store.tables import Batch, Execution, LedgerEntry, PlanRecord, Shard

TOKENS_WINDOW = timedelta(minutes=5)
J_PER_KWH = 3.6e6
SHARD_BUCKETS_S = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0)
SOLVE_BUCKETS_S = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0)


class StoreCollector(Collector):
    """Collects queue depth, shard and batch states, throughput and ledger totals per scrape."""

    def __init__(self, sessions: sessionmaker[Session], *, window: timedelta = TOKENS_WINDOW):
        """Read through ``sessions``; tokens/s is averaged over ``window``."""
        self.sessions = sessions
        self.window = window

    def describe(self) -> list[Metric]:
        """No up-front description (the collector reads the store only when scraped)."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Yield every metric from one read-only session."""
        with self.sessions() as s:
            yield from self._collect(s)

    def _collect(self, s: Session) -> Iterator[Metric]:
        yield from _queue_families(s)
        yield from _throughput_families(s)
        yield from _fault_families(s)
        yield from _ledger_families(s)


def _queue_families(s: Session) -> Iterator[Metric]:
    """Queue depth per pool, shards and batches by status, plan versions by status."""
    depth = GaugeMetricFamily(
        "gridshift_queue_depth",
        "Shards queued and not yet running, per pool.",
        labels=["site", "pool"],
    )
    for site, pool, n in s.execute(
        select(Shard.site, Shard.pool, func.count())
        .where(Shard.status == ShardStatus.QUEUED.value)
        .group_by(Shard.site, Shard.pool)
    ):
        depth.add_metric([site, pool], n)
    yield depth

    shards = GaugeMetricFamily("gridshift_shards", "Shards by status.", labels=["status"])
    counts = dict(s.execute(select(Shard.status, func.count()).group_by(Shard.status)).all())
    for status in ShardStatus:
        shards.add_metric([status.value], counts.get(status.value, 0))
    yield shards

    batches = GaugeMetricFamily("gridshift_batches", "Batches by status.", labels=["status"])
    for batch_status, n in s.execute(select(Batch.status, func.count()).group_by(Batch.status)):
        batches.add_metric([batch_status], n)
    yield batches

    plans = CounterMetricFamily(
        "gridshift_plans",
        "Plan versions stored, by status (failed: a re-plan that left the previous plan in force).",
        labels=["status"],
    )
    for plan_status, n in s.execute(
        select(PlanRecord.status, func.count()).group_by(PlanRecord.status)
    ):
        plans.add_metric([plan_status], n)
    yield plans


def _throughput_families(s: Session) -> Iterator[Metric]:
    """Tokens processed, shard durations and planner solve times."""
    tok = s.execute(
        select(
            func.coalesce(func.sum(LedgerEntry.input_tokens), 0),
            func.coalesce(func.sum(LedgerEntry.output_tokens), 0),
        )
    ).one()
    tokens = CounterMetricFamily(
        "gridshift_tokens",
        "Tokens processed (ledger rows; rate() gives tokens per second).",
        labels=["kind"],
    )
    tokens.add_metric(["input"], float(tok[0]))
    tokens.add_metric(["output"], float(tok[1]))
    yield tokens

    yield _histogram(
        s,
        "gridshift_shard_duration_seconds",
        "Wall time of booked execution attempts, s.",
        seconds_between(s, LedgerEntry.started_at, LedgerEntry.ended_at),
        SHARD_BUCKETS_S,
    )
    yield _histogram(
        s,
        "gridshift_planner_solve_seconds",
        "Solve time of each stored plan, s.",
        PlanRecord.solve_s,
        SOLVE_BUCKETS_S,
    )


def _fault_families(s: Session) -> Iterator[Metric]:
    """Signal fallbacks, budget breaches, lease expiries and storage faults."""
    fallbacks = CounterMetricFamily(
        "gridshift_signal_fallbacks",
        "Ledger rows whose carbon intensity came from a fallback, by fallback.",
        labels=["fallback"],
    )
    for kind, n in s.execute(
        select(LedgerEntry.signal_fallback, func.count())
        .where(LedgerEntry.signal_fallback.is_not(None))
        .group_by(LedgerEntry.signal_fallback)
    ):
        fallbacks.add_metric([str(kind)], n)
    yield fallbacks

    yield budget_breaches(s)

    expiries = CounterMetricFamily(
        "gridshift_lease_expiries", "Execution attempts whose lease expired (worker lost)."
    )
    expiries.add_metric([], s.scalar(select(func.count()).where(Execution.status == "lost")) or 0)
    yield expiries

    storage = CounterMetricFamily(
        "gridshift_storage_faults",
        "Execution attempts given back for a storage fault (full disk, quota, read-only or "
        "failing data dir); not counted against the shard's requests.",
        labels=["site", "pool"],
    )
    for site, pool, n in s.execute(
        select(Shard.site, Shard.pool, func.count())
        .join(Execution, Execution.shard_id == Shard.id)
        .where(Execution.status == STORAGE_FAULT)
        .group_by(Shard.site, Shard.pool)
    ):
        storage.add_metric([site, pool], n)
    yield storage


def _ledger_families(s: Session) -> Iterator[Metric]:
    """Booked energy and CO2 per site, and requests by outcome."""
    energy = CounterMetricFamily(
        "gridshift_energy_joules",
        "Facility energy booked in the ledger, J (method: measured-* or estimated*).",
        labels=["site", "method"],
    )
    co2 = CounterMetricFamily(
        "gridshift_co2_grams",
        "CO2 booked in the ledger, g (kind: location, market, embodied).",
        labels=["site", "kind"],
    )
    requests = CounterMetricFamily(
        "gridshift_requests", "Requests finished, by outcome.", labels=["outcome"]
    )
    done = failed = 0
    for site, method, kwh, loc, market, emb, ok, bad in s.execute(
        select(
            LedgerEntry.site,
            LedgerEntry.energy_method,
            func.sum(LedgerEntry.facility_energy_kwh),
            func.sum(LedgerEntry.co2_location_g),
            func.coalesce(
                func.sum(func.coalesce(LedgerEntry.co2_market_g, LedgerEntry.co2_location_g)),
                0.0,
            ),
            func.sum(LedgerEntry.embodied_co2_g),
            func.sum(LedgerEntry.requests_done),
            func.sum(LedgerEntry.requests_failed),
        ).group_by(LedgerEntry.site, LedgerEntry.energy_method)
    ):
        energy.add_metric([site, method], float(kwh or 0.0) * J_PER_KWH)
        co2.add_metric([site, "location"], float(loc or 0.0))
        co2.add_metric([site, "market"], float(market or 0.0))
        co2.add_metric([site, "embodied"], float(emb or 0.0))
        done += int(ok or 0)
        failed += int(bad or 0)
    requests.add_metric(["done"], done)
    requests.add_metric(["failed"], failed)
    yield energy
    yield _merge(co2)
    yield requests


def budget_breaches(s: Session) -> CounterMetricFamily:
    """Days whose booked CO2 exceeded their carbon budget (the pacer's rows, by scope)."""
    from scheduler.review.budget_breaches import breached_days

    family = CounterMetricFamily(
        "gridshift_budget_breaches",
        "Days whose booked CO2 (location-based + embodied) exceeded the day's carbon budget.",
        labels=["scope"],
    )
    counts: dict[str, int] = {}
    for b in breached_days(s):
        counts[b.scope] = counts.get(b.scope, 0) + 1
    for scope, n in sorted(counts.items()):
        family.add_metric([scope], n)
    return family


def _histogram(
    s: Session,
    name: str,
    documentation: str,
    value: Any,
    buckets: tuple[float, ...],
) -> HistogramMetricFamily:
    """A cumulative histogram of ``value`` over its rows, counted by the database."""
    row = s.execute(
        select(
            func.count(value),
            func.coalesce(func.sum(value), 0.0),
            *(func.coalesce(func.sum(case((value <= b, 1), else_=0)), 0) for b in buckets),
        )
    ).one()
    count, total = int(row[0]), float(row[1])
    cumulative = [(floatToGoString(b), float(n)) for b, n in zip(buckets, row[2:], strict=True)]
    cumulative.append(("+Inf", float(count)))
    family = HistogramMetricFamily(name, documentation)
    family.add_metric([], cumulative, sum_value=total)
    return family


def _merge(family: CounterMetricFamily) -> CounterMetricFamily:
    """Sum samples with equal labels (one site may have several energy methods)."""
    merged: dict[tuple[str, ...], float] = {}
    for sample in family.samples:
        if sample.name.endswith("_total"):
            key = tuple(sample.labels[k] for k in ("site", "kind"))
            merged[key] = merged.get(key, 0.0) + sample.value
    out = CounterMetricFamily(family.name, family.documentation, labels=["site", "kind"])
    for key, value in sorted(merged.items()):
        out.add_metric(list(key), value)
    return out


def make_registry(
    sessions: sessionmaker[Session] | None, *, process: bool = False
) -> CollectorRegistry:
    """A fresh registry (one per app or exporter, never the global one).

    It holds the store collector when ``sessions`` is given (export it from ONE target: the
    dispatcher, or the API when it runs alone; ``GRIDSHIFT_METRICS_STORE``), and with
    ``process`` the standard ``process_*``, ``python_info`` and ``python_gc_*`` families that
    Python dashboards expect, which are per process and sum correctly across replicas.
    """
    from prometheus_client import GCCollector, PlatformCollector, ProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    if sessions is not None:
        registry.register(StoreCollector(sessions))
    if process:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    return registry
