"""Plan versions, the current plan and the Gantt schedule (shards and uncut assignments)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from scheduler.errors import InvalidInput
from scheduler.review.signals import site_signals
from scheduler.review.views import (
    AssignmentView,
    CurrentPlan,
    GanttBar,
    PlanVersion,
    PlanVersions,
    ScheduleView,
)
from scheduler.store.tables import AssignmentRecord, Batch, PlanRecord, Shard, now_utc

DEFAULT_BEFORE = timedelta(hours=12)
DEFAULT_AFTER = timedelta(hours=36)
MAX_SPAN = timedelta(days=62)


def check_range(
    start: datetime | None,
    end: datetime | None,
    *,
    now: datetime | None = None,
    before: timedelta = DEFAULT_BEFORE,
    after: timedelta = DEFAULT_AFTER,
) -> tuple[datetime, datetime]:
    """Fill in and validate a time range (defaults: ``before`` ago to ``after`` ahead of now).

    Raises:
        InvalidInput: ``end`` is not after ``start``, a time has no timezone, or the span is
            longer than 62 days.
    """
    now = now or now_utc()
    for name, t in (("from", start), ("to", end)):
        if t is not None and t.tzinfo is None:
            raise InvalidInput(f"'{name}' must carry a timezone, e.g. 2026-11-22T00:00:00Z")
    start = start or now - before
    end = end or start + before + after
    if end <= start:
        raise InvalidInput(f"'to' ({end.isoformat()}) must be after 'from' ({start.isoformat()})")
    if end - start > MAX_SPAN:
        raise InvalidInput("the time range is longer than 62 days; ask for a shorter range")
    return start, end


def _version(plan: PlanRecord, assignment_count: int = 0) -> PlanVersion:
    return PlanVersion(
        id=plan.id,
        created_at=plan.created_at,
        trigger=plan.trigger,
        status=plan.status,
        is_current=plan.is_current,
        objectives=list(plan.objectives),
        tolerances=list(plan.tolerances),
        totals=dict(plan.totals),
        baselines=dict(plan.baselines),
        unplaced=list(plan.unplaced),
        solve_s=plan.solve_s,
        fallback_signals=plan.fallback_signals,
        horizon_start=plan.horizon_start,
        horizon_end=plan.horizon_end,
        assignment_count=assignment_count,
    )


def _unplaced_batch(entry: Any) -> Any:
    return entry.get("batch", entry.get("batch_id")) if isinstance(entry, dict) else entry


def _referenced_batches(version: PlanVersion) -> set[str]:
    ids = {str(_unplaced_batch(u)) for u in version.unplaced}
    for raw in version.baselines.values():
        if isinstance(raw, dict) and isinstance(raw.get("batches"), dict):
            ids.update(raw["batches"])
    return ids


def scope_versions(
    session: Session, versions: list[PlanVersion], tenant_id: str | None
) -> list[PlanVersion]:
    """``versions`` as ``tenant_id`` may see them (``None``: admin, everything).

    A tenant sees only its own batches in ``baselines.*.batches`` and ``unplaced``; fleet-wide
    ``totals`` and baseline totals are dropped (they are other tenants' work too).
    """
    if tenant_id is None or not versions:
        return versions
    referenced = set().union(*(_referenced_batches(v) for v in versions))
    own = (
        set(
            session.scalars(
                select(Batch.id).where(Batch.tenant_id == tenant_id, Batch.id.in_(referenced))
            )
        )
        if referenced
        else set()
    )
    out = []
    for v in versions:
        baselines = {
            name: {"batches": {b: f for b, f in raw["batches"].items() if b in own}}
            for name, raw in v.baselines.items()
            if isinstance(raw, dict) and isinstance(raw.get("batches"), dict)
        }
        unplaced = [u for u in v.unplaced if _unplaced_batch(u) in own]
        out.append(
            v.model_copy(update={"totals": {}, "baselines": baselines, "unplaced": unplaced})
        )
    return out


def plan_versions(
    session: Session, *, limit: int = 100, tenant_id: str | None = None
) -> PlanVersions:
    """Return the newest ``limit`` plan versions, newest first, with their assignment counts.

    Args:
        session: an open session.
        limit: how many versions.
        tenant_id: scope to this tenant's batches (``None``: admin, fleet-wide); counts then
            are the tenant's assignments.
    """
    plans = session.scalars(select(PlanRecord).order_by(PlanRecord.id.desc()).limit(limit)).all()
    q = (
        select(AssignmentRecord.plan_id, func.count())
        .where(AssignmentRecord.plan_id.in_([p.id for p in plans]))
        .group_by(AssignmentRecord.plan_id)
    )
    if tenant_id is not None:
        q = q.join(Batch, Batch.id == AssignmentRecord.batch_id).where(Batch.tenant_id == tenant_id)
    counts = dict(session.execute(q).all())
    data = [_version(p, int(counts.get(p.id, 0))) for p in plans]
    data = scope_versions(session, data, tenant_id)
    return PlanVersions(data=data, count=len(data))


def current_plan_record(session: Session) -> PlanRecord | None:
    """Return the newest plan marked current, or ``None``."""
    return session.scalars(
        select(PlanRecord).where(PlanRecord.is_current.is_(True)).order_by(PlanRecord.id.desc())
    ).first()


def _assignments(
    session: Session, plan_id: int, tenant_id: str | None
) -> list[tuple[AssignmentRecord, str]]:
    q = (
        select(AssignmentRecord, Batch.tenant_id)
        .join(Batch, Batch.id == AssignmentRecord.batch_id)
        .where(AssignmentRecord.plan_id == plan_id)
        .order_by(AssignmentRecord.slot_start, AssignmentRecord.site, AssignmentRecord.pool)
    )
    if tenant_id is not None:
        q = q.where(Batch.tenant_id == tenant_id)
    return [(a, t) for a, t in session.execute(q).all()]


def current_plan(session: Session, *, tenant_id: str | None = None) -> CurrentPlan:
    """Return the plan in force with its assignments and the signals of their sites and slots.

    Args:
        session: an open session.
        tenant_id: only this tenant's assignments (``None``: all, for admins).
    """
    plan = current_plan_record(session)
    if plan is None:
        return CurrentPlan(plan=None, assignments=[], signals=[])
    rows = _assignments(session, plan.id, tenant_id)
    sites = {a.site for a, _ in rows}
    signals = site_signals(session, sites, plan.horizon_start, plan.horizon_end)
    lookup = {(s.site, p.time): p for s in signals for p in s.points}
    views = []
    for a, tenant in rows:
        point = lookup.get((a.site, a.slot_start))
        views.append(
            AssignmentView(
                id=a.id,
                batch_id=a.batch_id,
                tenant_id=tenant,
                site=a.site,
                pool=a.pool,
                model=a.model,
                slot_start=a.slot_start,
                requests=a.requests,
                input_tokens=a.input_tokens,
                output_tokens=a.output_tokens,
                gpu_hours=a.gpu_hours,
                energy_kwh=a.energy_kwh,
                co2_g=a.co2_g,
                cost=a.cost,
                water_l=a.water_l,
                carbon_g_per_kwh=a.carbon_g_per_kwh
                if a.carbon_g_per_kwh is not None
                else (point.carbon_g_per_kwh if point else None),
                # what the plan used (the slot's mean as the plan priced it), else the cache
                price_per_kwh=a.price_per_kwh
                if a.price_per_kwh is not None
                else (point.price_per_kwh if point else None),
                renewable_kw=a.renewable_kw
                if a.renewable_kw is not None
                else (point.renewable_kw if point else None),
                signal_issued_at=a.signal_issued_at,
            )
        )
    version = scope_versions(session, [_version(plan, len(rows))], tenant_id)[0]
    return CurrentPlan(plan=version, assignments=views, signals=signals if rows else [])


def batch_labels(session: Session, batch_ids: Iterable[str]) -> dict[str, str]:
    """A short label per batch: its job's name when it came from ``jobs submit``, else its id."""
    from scheduler.jobs import JOB_METADATA_KEY

    ids = sorted(set(batch_ids))
    rows = session.execute(select(Batch.id, Batch.metadata_).where(Batch.id.in_(ids))).all()
    return {
        batch_id: str((meta or {}).get(JOB_METADATA_KEY) or batch_id) for batch_id, meta in rows
    }


def infer_slot_minutes(times: Iterable[datetime], default: int = 60) -> int:
    """Guess the slot length in minutes as the GCD of the gaps between distinct slot starts."""
    stamps = sorted({int(t.timestamp()) // 60 for t in times})
    g = 0
    for a, b in zip(stamps, stamps[1:], strict=False):
        g = math.gcd(g, b - a)
    return g if 0 < g <= 1440 else default


def _shard_bar(s: Shard, tenant: str, slot: timedelta, now: datetime) -> GanttBar:
    started = s.started_at
    if started is None:
        start, end = s.slot_start, s.slot_start + slot
    else:
        start = started
        # A running shard is drawn to its slot's end (or now, if it overran).
        end = s.finished_at or max(now, s.slot_start + slot, started + timedelta(minutes=1))
    return GanttBar(
        id=s.id,
        kind="shard",
        batch_id=s.batch_id,
        tenant_id=tenant,
        site=s.site,
        pool=s.pool,
        model=s.model,
        start=start,
        end=end,
        status=s.status,
        requests=s.request_count,
        planned=started is None,
    )


def schedule_view(
    session: Session,
    start: datetime,
    end: datetime,
    *,
    tenant_id: str | None = None,
    now: datetime | None = None,
    slot_minutes: int | None = None,
    pools: Iterable[tuple[str, str]] = (),
) -> ScheduleView:
    """Return the Gantt data over ``[start, end)``.

    One bar per shard (its actual start and end when it ran, else its planned slot) and one
    ``planned`` bar per assignment of the current plan not yet cut into shards; each site's
    carbon intensity, price and renewable output over the same axis.

    Args:
        session: an open session.
        start: axis start (aware UTC).
        end: axis end (exclusive).
        tenant_id: only this tenant's work (``None``: all).
        now: the "now" marker (default: the clock).
        slot_minutes: slot length; inferred from the slots shown when ``None``.
        pools: the fleet's (site, pool) pairs: each gets a lane and its site's signals even
            with no bar in the range, so the strips show every site the plan could use.
    """
    now = now or now_utc()
    pools = list(pools)
    plan = current_plan_record(session)
    horizon = timedelta(days=1)
    sq = (
        select(Shard, Batch.tenant_id)
        .join(Batch, Batch.id == Shard.batch_id)
        .where(Shard.slot_start < end, Shard.slot_start >= start - horizon)
    )
    if tenant_id is not None:
        sq = sq.where(Batch.tenant_id == tenant_id)
    shards = [(s, t) for s, t in session.execute(sq).all()]
    assigned = [] if plan is None else _assignments(session, plan.id, tenant_id)
    cut: set[int] = set()
    if plan is not None:
        cut = {
            i
            for i in session.scalars(
                select(Shard.assignment_id)
                .join(AssignmentRecord, AssignmentRecord.id == Shard.assignment_id)
                .where(AssignmentRecord.plan_id == plan.id)
            ).all()
            if i is not None
        }
    uncut = [(a, t) for a, t in assigned if a.id not in cut and start <= a.slot_start < end]
    slot_min = slot_minutes or infer_slot_minutes(
        [s.slot_start for s, _ in shards] + [a.slot_start for a, _ in assigned]
    )
    slot = timedelta(minutes=slot_min)
    bars = [_shard_bar(s, t, slot, now) for s, t in shards]
    bars = [b for b in bars if b.end > start and b.start < end]
    bars += [
        GanttBar(
            id=f"a{a.id}",
            kind="assignment",
            batch_id=a.batch_id,
            tenant_id=t,
            site=a.site,
            pool=a.pool,
            model=a.model,
            start=a.slot_start,
            end=a.slot_start + slot,
            status="planned",
            requests=a.requests,
            planned=True,
        )
        for a, t in uncut
    ]
    labels = batch_labels(session, (b.batch_id for b in bars))
    for b in bars:
        b.label = labels.get(b.batch_id)
    bars.sort(key=lambda b: (b.site, b.pool, b.start, b.id))
    lanes = sorted({f"{b.site}/{b.pool}" for b in bars} | {f"{s}/{p}" for s, p in pools})
    sites = {b.site for b in bars} | {s for s, _ in pools}
    return ScheduleView(
        start=start,
        end=end,
        now=now,
        slot_minutes=slot_min,
        lanes=lanes,
        bars=bars,
        signals=site_signals(session, sites, start, end),
        plan_id=plan.id if plan else None,
    )
