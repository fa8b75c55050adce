"""Reconciling lost work: expired leases, lost messages, deadlines, cancellations, stuck finalizers."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import Settings
from scheduler.dispatch.finalize import finalize_batch, has_running_shards
from scheduler.dispatch.leases import requeue_expired
from scheduler.domain import BatchStatus, ShardStatus
from scheduler.store.db import transaction
from scheduler.store.shard_moves import shard_from
from scheduler.store.tables import Batch, Shard

_STOPPABLE = (ShardStatus.PLANNED.value, ShardStatus.QUEUED.value)


def all_queued(session: Session) -> list[Shard]:
    """Every queued shard, in slot order: what to re-send once the broker lost its messages."""
    return list(
        session.scalars(
            select(Shard)
            .where(Shard.status == ShardStatus.QUEUED.value)
            .order_by(Shard.slot_start, Shard.created_at)
        )
    )


def unqueue(session: Session, shard_ids: list[str], *, queued_at: datetime) -> int:
    """Put shards whose message could not be sent back to ``planned`` (due again next tick).

    Compare-and-set on ``queued`` and the ``queued_at`` of this tick, so a shard a worker
    already claimed, or one queued again since, is left alone.
    """
    if not shard_ids:
        return 0
    res = session.execute(
        update(Shard)
        .where(
            Shard.id.in_(shard_ids),
            shard_from(ShardStatus.PLANNED, ShardStatus.QUEUED),
            Shard.queued_at == queued_at,
        )
        .values(status=ShardStatus.PLANNED.value, queued_at=None)
    )
    return int(res.rowcount)  # type: ignore[attr-defined]


def stale_queued(session: Session, *, now: datetime, requeue_after_s: float) -> list[Shard]:
    """Queued shards whose message was probably lost: queued long ago on an idle pool.

    A pool whose worker holds a live lease is busy, so its queued shards are simply waiting;
    only on a pool with no live lease is an old ``queued`` shard re-sent. A duplicate message
    is harmless: the claim (compare-and-set) lets only one run.
    """
    busy = set(
        session.execute(
            select(Shard.site, Shard.pool).where(
                Shard.status == ShardStatus.RUNNING.value, Shard.lease_expires_at >= now
            )
        ).all()
    )
    cutoff = now - timedelta(seconds=requeue_after_s)
    rows = session.scalars(
        select(Shard)
        .where(Shard.status == ShardStatus.QUEUED.value, Shard.queued_at < cutoff)
        .order_by(Shard.slot_start, Shard.created_at)
    ).all()
    return [r for r in rows if (r.site, r.pool) not in busy]


def stop_unstarted(session: Session, batch_id: str, *, now: datetime) -> int:
    """Cancel the planned and queued shards of a batch (running ones finish)."""
    res = session.execute(
        update(Shard)
        .where(
            Shard.batch_id == batch_id,
            shard_from(ShardStatus.CANCELLED, ShardStatus.PLANNED, ShardStatus.QUEUED),
        )
        .values(status=ShardStatus.CANCELLED.value, finished_at=now)
    )
    return int(res.rowcount)  # type: ignore[attr-defined]


def close_batches(
    factory: sessionmaker[Session], settings: Settings, *, now: datetime
) -> dict[str, list[str]]:
    """Handle cancelling, past-deadline and stuck-finalizing batches.

    - ``cancelling``: unstarted shards cancelled; once nothing runs, outputs so far are
      finalized and the batch is ``cancelled``.
    - ``in_progress`` past its deadline with unfinished requests: unstarted shards cancelled;
      once nothing runs, ``expired`` (unfinished requests get ``batch_expired`` lines).
    - ``finalizing`` (a finalizer died): finalized again (idempotent).

    Returns:
        Batch ids per outcome: ``cancelled``, ``expired``, ``completed``.
    """
    done: dict[str, list[str]] = {"cancelled": [], "expired": [], "completed": []}
    with transaction(factory) as s:
        cancelling = list(
            s.scalars(select(Batch.id).where(Batch.status == BatchStatus.CANCELLING.value))
        )
        expiring = list(
            s.scalars(
                select(Batch.id).where(
                    Batch.status == BatchStatus.IN_PROGRESS.value, Batch.deadline <= now
                )
            )
        )
        finalizing = list(
            s.scalars(select(Batch.id).where(Batch.status == BatchStatus.FINALIZING.value))
        )
        # Cancelled at once by the API while some shards had already finished: files missing.
        unfiled = list(
            s.scalars(
                select(Batch.id).where(
                    Batch.status == BatchStatus.CANCELLED.value,
                    Batch.output_file_id.is_(None),
                    Batch.error_file_id.is_(None),
                    Batch.id.in_(
                        select(Shard.batch_id).where(Shard.status == ShardStatus.DONE.value)
                    ),
                )
            )
        )
        ready: list[tuple[str, BatchStatus]] = [(b, BatchStatus.CANCELLED) for b in unfiled]
        for batch_id in cancelling:
            stop_unstarted(s, batch_id, now=now)
            if not has_running_shards(s, batch_id):
                ready.append((batch_id, BatchStatus.CANCELLED))
        for batch_id in expiring:
            stop_unstarted(s, batch_id, now=now)
            if not has_running_shards(s, batch_id):
                ready.append((batch_id, BatchStatus.EXPIRED))
    for batch_id, outcome in ready:
        if finalize_batch(factory, settings, batch_id, outcome, now=now):
            done[outcome.value].append(batch_id)
    for batch_id in finalizing:
        if finalize_batch(factory, settings, batch_id, BatchStatus.COMPLETED, now=now):
            done["completed"].append(batch_id)
    return done


def expire_leases(factory: sessionmaker[Session], *, now: datetime) -> list[str]:
    """Move shards whose lease expired back to ``queued``; return their ids (to re-send)."""
    with transaction(factory) as s:
        return requeue_expired(s, now=now)


def last_model_per_pool(session: Session) -> dict[tuple[str, str], str]:
    """The model each pool ran (or is running) most recently, to keep it loaded."""
    sub = (
        select(Shard.site, Shard.pool, func.max(Shard.started_at).label("t"))
        .where(Shard.started_at.is_not(None))
        .group_by(Shard.site, Shard.pool)
        .subquery()
    )
    rows = session.execute(
        select(Shard.site, Shard.pool, Shard.model).join(
            sub,
            and_(Shard.site == sub.c.site, Shard.pool == sub.c.pool, Shard.started_at == sub.c.t),
        )
    ).all()
    return {(site, pool): model for site, pool, model in rows}
