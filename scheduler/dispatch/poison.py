"""Poison shards: a shard whose run keeps killing its worker is split until the culprit is alone.

A lease that expires means the worker died (or hung) while running the shard. The first time,
the shard is re-queued as it is (a worker can die for reasons of its own). From the
``POISON_AFTER``-th expiry on, a shard of several requests is split in two halves, new shards
queued in its place (the requests move to them; the old shard ends ``failed`` owning nothing),
and each half starts with a clean attempt count: halving again and again isolates the request
that kills the worker in about log2(n) rounds while every other request finishes. A shard of one
request that still kills its worker fails, and finalization gives that request an error line
saying so. ``MAX_ATTEMPTS`` caps every path (lease expiry included).

Only attempts that failed in the engine (or whose worker died) count: an attempt given back for
a storage fault (full disk, quota, read-only or failing data dir; ``executions.status`` =
``storage_fault``) is an infrastructure fault, never held against the shard's requests.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.orm import Session

from scheduler.domain import ShardStatus
from scheduler.store.shard_moves import shard_from
from scheduler.store.tables import BatchRequest, Execution, Shard

MAX_ATTEMPTS = 5
POISON_AFTER = 2

#: ``executions.status`` of an attempt given back for a storage fault: not counted.
STORAGE_FAULT = "storage_fault"


def storage_faults_of(shard_id: Any) -> ColumnElement[int]:
    """SQL: how many attempts of the shard were given back for storage faults."""
    return (
        select(func.count())
        .where(Execution.shard_id == shard_id, Execution.status == STORAGE_FAULT)
        .scalar_subquery()
    )


def counted_attempts(session: Session, shard_id: str, attempts: int) -> int:
    """``attempts`` less those given back for storage faults (what poison and caps count)."""
    return attempts - int(session.scalar(select(storage_faults_of(shard_id))) or 0)


def poisoned_message(attempts: int) -> str:
    """The error of a one-request shard that kept killing its worker."""
    return (
        f"this request's worker died while running it, {attempts} times, with the request run "
        "alone: the request itself crashes the engine (a poison request); check its prompt and "
        "options, then send it again in a new batch"
    )


def _fail(session: Session, shard_id: str, attempts: int, now: datetime, error: str) -> bool:
    res = session.execute(
        update(Shard)
        .where(
            Shard.id == shard_id,
            shard_from(ShardStatus.FAILED, ShardStatus.RUNNING),
            Shard.attempts == attempts,
            Shard.lease_expires_at < now,
        )
        .values(
            status=ShardStatus.FAILED.value,
            lease_owner=None,
            finished_at=now,
            last_error=error[:4000],
        )
        .execution_options(synchronize_session=False)
    )
    return bool(res.rowcount == 1)  # type: ignore[attr-defined]


def split_shard(session: Session, shard: Shard, *, now: datetime) -> list[str]:
    """Replace an expired ``shard`` of several requests by two queued halves; their ids.

    Nothing happens (``[]``) when a worker finished or re-claimed the shard meanwhile.
    """
    ids = list(
        session.scalars(
            select(BatchRequest.id)
            .where(BatchRequest.shard_id == shard.id)
            .order_by(BatchRequest.line_no)
        )
    )
    if len(ids) < 2:
        return []
    halves = [ids[: len(ids) // 2], ids[len(ids) // 2 :]]
    children = [f"shard_{uuid.uuid4().hex[:24]}" for _ in halves]
    note = (
        f"split after its worker died in {shard.attempts} attempts: looking for the request "
        f"that kills it; its {len(ids)} requests continue in {children[0]} and {children[1]}"
    )
    if not _fail(session, shard.id, shard.attempts, now, note):
        return []
    for child, members in zip(children, halves, strict=True):
        share = len(members) / len(ids)
        session.add(
            Shard(
                id=child,
                batch_id=shard.batch_id,
                part_id=shard.part_id,
                plan_id=shard.plan_id,
                assignment_id=shard.assignment_id,
                site=shard.site,
                pool=shard.pool,
                model=shard.model,
                slot_start=shard.slot_start,
                status=ShardStatus.QUEUED.value,
                request_count=len(members),
                attempts=0,
                created_at=now,
                queued_at=now,
                planned_energy_kwh=shard.planned_energy_kwh * share,
                planned_co2_g=shard.planned_co2_g * share,
                last_error=f"half of {shard.id}, split to isolate a request that kills its worker",
            )
        )
        session.flush()
        for i in range(0, len(members), 500):
            session.execute(
                update(BatchRequest)
                .where(BatchRequest.id.in_(members[i : i + 500]))
                .values(shard_id=child)
                .execution_options(synchronize_session=False)
            )
    session.execute(
        update(Shard)
        .where(Shard.id == shard.id)
        .values(request_count=0, planned_energy_kwh=0.0, planned_co2_g=0.0)
        .execution_options(synchronize_session=False)
    )
    return children


def handle_expired(session: Session, shard: Shard, *, now: datetime) -> tuple[list[str], bool]:
    """Split or fail an expired shard that kept losing its worker.

    Returns:
        The ids of new shards to send, and whether the shard was failed or split (False: the
        caller re-queues it as usual).
    """
    counted = counted_attempts(session, shard.id, shard.attempts)
    if counted < POISON_AFTER:
        return [], False
    if shard.request_count > 1:
        children = split_shard(session, shard, now=now)
        if children:
            _mark_lost(session, shard.id, shard.attempts, now)
        return children, bool(children)
    failed = _fail(session, shard.id, shard.attempts, now, poisoned_message(counted))
    if failed:
        _mark_lost(session, shard.id, shard.attempts, now)
    return [], failed


def _mark_lost(session: Session, shard_id: str, attempt: int, now: datetime) -> None:
    session.execute(
        update(Execution)
        .where(Execution.shard_id == shard_id, Execution.attempt == attempt)
        .values(status="lost", finished_at=now, error="lease expired; worker presumed dead")
    )
