"""Fast path for new batches: place only the new parts around the plan in force.

A full re-plan of thousands of open batches takes tens of seconds on a busy machine; a new
batch should not wait for it. ``add_new_parts`` solves a problem holding only the parts no plan
knows yet, with every shard of the current plan (planned, queued or running) as fixed load, so
capacity, caps and grid energy already committed are respected. The result extends the current
plan version in place (its assignments, totals, per-batch baselines, unplaced list and notes),
under the same invariant as a full re-plan (every new part planned or unplaced with a reason).

The planner loop follows fast-path additions with a full re-plan (``consolidate``) once
``planner_full_every_s`` has passed since the last one, so the plan's quality is that of a
from-scratch solve again (placing new work around fixed old work can cost some optimality).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import Settings
from scheduler.dispatch.budget import budget_states
from scheduler.dispatch.plan_write import ShardLimits, write_assignments, write_lock
from scheduler.dispatch.replan import (
    Planner,
    _assignment_row,
    baselines_with_batches,
    build_problem,
    price_assignments,
    solve_checked,
)
from scheduler.dispatch.signals import HorizonSignals
from scheduler.domain import Fleet
from scheduler.store.db import transaction
from scheduler.store.tables import AssignmentRecord, PlanRecord, Shard

log = logging.getLogger(__name__)


def _known_parts(s: Session, current: PlanRecord) -> set[str]:
    known = set(
        s.scalars(
            select(AssignmentRecord.part_id)
            .where(AssignmentRecord.plan_id == current.id)
            .distinct()
        )
    )
    known |= {str(u.get("batch")) for u in current.unplaced or []}
    known |= set(s.scalars(select(Shard.part_id).distinct()))
    return known


def _add(total: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(total)
    for k, v in extra.items():
        if isinstance(v, int | float) and isinstance(out.get(k, 0.0), int | float):
            out[k] = float(out.get(k, 0.0)) + float(v)
    return out


def _merge_baselines(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in set(old) | set(new):
        a, b = old.get(name), new.get(name)
        if not isinstance(a, dict) or not isinstance(b, dict):
            out[name] = a if a is not None else b
            continue
        row = _add(a, b)
        batches = {**(a.get("batches") or {}), **(b.get("batches") or {})}
        if batches:
            row["batches"] = batches
        out[name] = row
    return out


def add_new_parts(
    factory: sessionmaker[Session],
    settings: Settings,
    fleet: Fleet,
    now: datetime,
    *,
    signals_for: HorizonSignals,
    planner: Planner | None = None,
) -> int | None:
    """Place the parts no plan knows around the current plan; returns its id, or None.

    None means there was nothing to add or no current plan to extend (then a full re-plan is
    the way). Raises ``PlanningError`` like ``replan`` (nothing is written then).
    """
    with factory() as s:
        current = s.scalars(select(PlanRecord).where(PlanRecord.is_current.is_(True))).first()
        if current is None:
            return None
        states = budget_states(s, fleet, now)
        known = _known_parts(s, current)
        problem, free, deferred = build_problem(
            s, settings, fleet, now, signals_for, states, exclude=known
        )
        if problem is None:
            return None
        new = list(problem.batches)
        held = [d for d in deferred if d["batch"] not in known]
        if not new and not held:
            return None
    new_ids = {b.id for b in new}
    plan = solve_checked(problem, planner) if new else None
    priced = price_assignments(problem, plan) if plan else []
    part_batch = {p: p.split("~", 1)[0] for p in new_ids}
    baselines = baselines_with_batches(problem, plan, part_batch) if plan else {}
    limits = ShardLimits(settings.max_shard_requests, settings.max_shard_gpu_minutes)
    with transaction(factory) as s:
        write_lock(s)
        record = s.get(PlanRecord, current.id)
        if record is None or not record.is_current:
            return None  # a full re-plan was published meanwhile: it holds the new parts
        rows = [
            _assignment_row(problem, record.id, a, price, part_batch)
            for a, price in zip(plan.assignments if plan else (), priced, strict=True)
        ]
        stats = write_assignments(
            s, rows, {p: free[p] for p in new_ids}, now=now, limits=limits, only=new_ids
        )
        if plan is not None:
            totals = {k: getattr(plan.totals, k) for k in plan.totals.__dataclass_fields__}
            record.totals = _add(record.totals, totals)
            record.baselines = _merge_baselines(record.baselines, baselines)
        added = [{"batch": u.batch, "reason": u.reason} for u in (plan.unplaced if plan else ())]
        record.unplaced = [*(record.unplaced or []), *added, *held]
        record.notes = [
            *(record.notes or []),
            f"fast path at {now.isoformat()}: {len(new)} new parts placed around this plan "
            f"({len(added) + len(held)} unplaced); {stats.note()}",
        ]
        plan_id = record.id
    log.info(
        "plan %d extended (fast path): %d new parts, %d unplaced; %s",
        plan_id,
        len(new),
        len(added) + len(held),
        stats.note(),
    )
    return plan_id
