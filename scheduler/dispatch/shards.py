"""Cutting assignments into shards of whole requests, bounded in requests and GPU-minutes."""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from scheduler.domain import ShardStatus
from scheduler.store.tables import AssignmentRecord, BatchRequest, Shard

LEASED = (ShardStatus.QUEUED.value, ShardStatus.RUNNING.value, ShardStatus.DONE.value)


def shard_sizes(
    n_requests: int, gpu_hours: float, *, max_requests: int, max_gpu_minutes: float
) -> list[int]:
    """Balanced shard sizes for ``n_requests`` carrying ``gpu_hours`` in total.

    Each shard holds at most ``max_requests`` requests and about ``max_gpu_minutes`` of
    GPU time (always at least one request, so one huge request still gets a shard).
    """
    if n_requests <= 0:
        return []
    per_request_min = gpu_hours * 60.0 / n_requests
    by_time = math.floor(max_gpu_minutes / per_request_min) if per_request_min > 0 else n_requests
    cap = max(1, min(max_requests, by_time))
    k = math.ceil(n_requests / cap)
    base, extra = divmod(n_requests, k)
    return [base + (1 if i < extra else 0) for i in range(k)]


def unleased_request_ids(session: Session, part_id: str) -> list[int]:
    """Requests of a part not in a queued, running or done shard, in input order."""
    rows = session.execute(
        select(BatchRequest.id, Shard.status)
        .outerjoin(Shard, Shard.id == BatchRequest.shard_id)
        .where(BatchRequest.part_id == part_id)
        .order_by(BatchRequest.line_no)
    ).all()
    return [rid for rid, status in rows if status not in LEASED]


def release_planned_shards(session: Session, batch_ids: Sequence[str]) -> int:
    """Delete the PLANNED shards of ``batch_ids`` and free their requests (a new plan follows).

    Queued, running and done shards are never touched: a plan never moves leased work.

    Returns:
        The number of shards removed.
    """
    if not batch_ids:
        return 0
    ids = list(
        session.scalars(
            select(Shard.id).where(
                Shard.batch_id.in_(batch_ids), Shard.status == ShardStatus.PLANNED.value
            )
        )
    )
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        session.execute(
            update(BatchRequest).where(BatchRequest.shard_id.in_(chunk)).values(shard_id=None)
        )
        session.query(Shard).filter(
            Shard.id.in_(chunk), Shard.status == ShardStatus.PLANNED.value
        ).delete(synchronize_session=False)
    return len(ids)


def create_shards(
    session: Session,
    assignment: AssignmentRecord,
    request_ids: Sequence[int],
    *,
    max_requests: int,
    max_gpu_minutes: float,
    now: datetime,
) -> list[Shard]:
    """Cut one assignment's requests into PLANNED shards and point the requests at them."""
    sizes = shard_sizes(
        len(request_ids),
        assignment.gpu_hours,
        max_requests=max_requests,
        max_gpu_minutes=max_gpu_minutes,
    )
    shards = []
    start = 0
    for size in sizes:
        ids = list(request_ids[start : start + size])
        start += size
        share = size / assignment.requests if assignment.requests else 0.0
        shard = Shard(
            id=f"shard_{uuid.uuid4().hex[:24]}",
            batch_id=assignment.batch_id,
            part_id=assignment.part_id,
            plan_id=assignment.plan_id,
            assignment_id=assignment.id,
            site=assignment.site,
            pool=assignment.pool,
            model=assignment.model,
            slot_start=assignment.slot_start,
            status=ShardStatus.PLANNED.value,
            request_count=size,
            attempts=0,
            created_at=now,
            planned_energy_kwh=assignment.energy_kwh * share,
            planned_co2_g=assignment.co2_g * share,
        )
        session.add(shard)
        session.flush()
        for i in range(0, len(ids), 500):
            session.execute(
                update(BatchRequest)
                .where(BatchRequest.id.in_(ids[i : i + 500]))
                .values(shard_id=shard.id)
            )
        shards.append(shard)
    return shards
