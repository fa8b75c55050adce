"""When to re-plan (``replan_trigger``) and how a failed re-plan is recorded (``record_failure``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import exists, select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.dispatch.plan_write import any_free
from scheduler.dispatch.planner_lock import check_fence
from scheduler.domain import BatchStatus, Fleet
from scheduler.slots import slot_floor
from scheduler.store.db import transaction
from scheduler.store.tables import AssignmentRecord, Batch, BatchPart, PlanRecord, Shard


def record_failure(
    factory: sessionmaker[Session], fleet: Fleet, now: datetime, trigger: str, error: str
) -> int:
    """Store a failed re-plan as a ``plans`` row with status ``failed`` (never current).

    The current plan stays in force; the row makes the failure visible in ``/v1/plans``, the
    dashboard's plan history and the ``gridshift_plans_total{status="failed"}`` metric.
    """
    start = slot_floor(now, fleet.slot_minutes)
    with transaction(factory) as s:
        check_fence(s)  # a planner that lost its lock records nothing either
        record = PlanRecord(
            created_at=now,
            trigger=trigger,
            status="failed",
            objectives=[],
            tolerances=[],
            totals={},
            baselines={},
            unplaced=[],
            stage_optima={},
            notes=[f"re-plan failed; the previous plan stays in force: {error}"],
            solve_s=0.0,
            fallback_signals=False,
            horizon_start=start,
            horizon_end=start,
            is_current=False,
        )
        s.add(record)
        s.flush()
        return record.id


def replan_trigger(s: Session, fleet: Fleet, now: datetime) -> str | None:
    """Why the planner should re-plan now, or None (a constant number of queries).

    ``new_batch``: an in-progress batch has a part that no shard and no current plan knows
    (a part in the plan's ``unplaced``, e.g. deferred by the carbon budget, is known).
    ``slot_boundary``: the current slot differs from the one the current plan started in and
    some work is still free.
    """
    current = s.scalars(select(PlanRecord).where(PlanRecord.is_current.is_(True))).first()
    # Parts of open batches with no shard and no assignment in the current plan: only those
    # rows leave the database (NOT EXISTS on the indexed batch ids), whatever the open count.
    unknown = (
        select(BatchPart.id)
        .join(Batch, Batch.id == BatchPart.batch_id)
        .where(
            Batch.status == BatchStatus.IN_PROGRESS.value,
            Batch.deadline > now,
            ~exists().where(Shard.batch_id == BatchPart.batch_id, Shard.part_id == BatchPart.id),
        )
    )
    if current is not None:
        unknown = unknown.where(
            ~exists().where(
                AssignmentRecord.plan_id == current.id,
                AssignmentRecord.batch_id == BatchPart.batch_id,
                AssignmentRecord.part_id == BatchPart.id,
            )
        )
    candidates = set(s.scalars(unknown))
    if candidates:
        unplaced = {u.get("batch") for u in (current.unplaced or [])} if current else set()
        if candidates - unplaced:
            return "new_batch"
    moved = current is not None and current.horizon_start != slot_floor(now, fleet.slot_minutes)
    if moved and any_free(s, now):
        return "slot_boundary"
    return None
