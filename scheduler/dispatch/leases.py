"""Shard leases: compare-and-set claims, heartbeats, guarded completion and expiry."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, exists, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from scheduler.dispatch.poison import MAX_ATTEMPTS, STORAGE_FAULT, storage_faults_of
from scheduler.domain import ShardStatus
from scheduler.errors import LeaseLost
from scheduler.store.db import transaction
from scheduler.store.shard_moves import shard_from
from scheduler.store.tables import Batch, Execution, Shard


@dataclass(frozen=True, slots=True)
class Claim:
    """A lease held on one shard by one worker for one attempt."""

    shard_id: str
    worker_id: str
    attempt: int
    started_at: datetime
    lease_expires_at: datetime


def claim_shard(
    factory: sessionmaker[Session],
    shard_id: str,
    *,
    worker_id: str,
    now: datetime,
    lease_s: float,
) -> Claim | None:
    """Claim ``shard_id`` if it is queued, or running under an expired lease.

    One ``UPDATE ... WHERE`` (compare-and-set) moves the shard to ``running``, increments
    ``attempts`` and sets the lease; the attempt's ``executions`` row is inserted in the same
    transaction. Two workers racing for one shard: exactly one UPDATE matches.

    No attempt starts at or after the batch's deadline (``now``, the worker's clock): the shard
    stays unstarted and the dispatcher's next tick expires the batch, as it does when its tick
    comes first. Without this a shard queued in the last seconds of a slot and picked up after
    the deadline ran, and the batch completed late or expired depending on which came first.

    Returns:
        The claim, or None when the shard is done, cancelled, leased by a live worker, or its
        batch is past its deadline.
    """
    expires = now + timedelta(seconds=lease_s)
    with transaction(factory) as s:
        res = s.execute(
            update(Shard)
            .where(
                Shard.id == shard_id,
                exists().where(Batch.id == Shard.batch_id, Batch.deadline > now),
                or_(
                    shard_from(ShardStatus.RUNNING, ShardStatus.QUEUED),
                    and_(
                        shard_from(ShardStatus.RUNNING, ShardStatus.RUNNING),  # re-claim
                        Shard.lease_expires_at < now,
                        # the cap holds on this path too (storage faults not counted)
                        Shard.attempts - storage_faults_of(Shard.id) < MAX_ATTEMPTS,
                    ),
                ),
            )
            .values(
                status=ShardStatus.RUNNING.value,
                attempts=Shard.attempts + 1,
                lease_owner=worker_id,
                lease_expires_at=expires,
                heartbeat_at=now,
                started_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        if res.rowcount != 1:  # type: ignore[attr-defined]
            return None
        attempt = s.execute(select(Shard.attempts).where(Shard.id == shard_id)).scalar_one()
        # A previous attempt that died left its executions row "running": it is lost.
        s.execute(
            update(Execution)
            .where(Execution.shard_id == shard_id, Execution.status == "running")
            .values(status="lost", finished_at=now, error="lease expired; worker presumed dead")
        )
        s.add(
            Execution(
                shard_id=shard_id,
                attempt=attempt,
                worker=worker_id,
                status="running",
                started_at=now,
            )
        )
    return Claim(shard_id, worker_id, attempt, now, expires)


def lease_guard(claim: Claim, *, to: ShardStatus | None = None) -> list[object]:
    """SQL conditions that hold only while ``claim`` still owns its shard.

    With ``to``, the conditions of moving the claimed (running) shard to ``to``.
    """
    return [
        Shard.id == claim.shard_id,
        shard_from(to or ShardStatus.RUNNING, ShardStatus.RUNNING),
        Shard.lease_owner == claim.worker_id,
        Shard.attempts == claim.attempt,
    ]


def extend_lease(
    factory: sessionmaker[Session], claim: Claim, *, now: datetime, lease_s: float
) -> bool:
    """Heartbeat: push the lease of ``claim`` to ``now + lease_s``.

    Returns:
        False when the lease was lost (the shard was re-queued or taken by another worker).
    """
    with transaction(factory) as s:
        res = s.execute(
            update(Shard)
            .where(*lease_guard(claim))  # type: ignore[arg-type]
            .values(lease_expires_at=now + timedelta(seconds=lease_s), heartbeat_at=now)
            .execution_options(synchronize_session=False)
        )
        return bool(res.rowcount == 1)  # type: ignore[attr-defined]


def mark_done(
    session: Session,
    claim: Claim,
    *,
    now: datetime,
    requests_done: int,
    requests_failed: int,
    output_path: str,
    error_path: str,
) -> None:
    """Inside the caller's transaction: move the claimed shard to ``done``, guarded by the lease.

    Raises:
        LeaseLost: the lease expired and the shard was re-queued or claimed by someone else;
            the caller's transaction must roll back (no ledger row, no counts).
    """
    res = session.execute(
        update(Shard)
        .where(*lease_guard(claim, to=ShardStatus.DONE))  # type: ignore[arg-type]
        .values(
            status=ShardStatus.DONE.value,
            finished_at=now,
            requests_done=requests_done,
            requests_failed=requests_failed,
            output_path=output_path,
            error_path=error_path,
            lease_owner=None,
            lease_expires_at=None,
        )
        .execution_options(synchronize_session=False)
    )
    if res.rowcount != 1:  # type: ignore[attr-defined]
        raise LeaseLost(
            f"shard {claim.shard_id} attempt {claim.attempt} lost its lease (it expired and the "
            "shard was re-queued); its results are discarded and the new attempt books them"
        )
    session.execute(
        update(Execution)
        .where(Execution.shard_id == claim.shard_id, Execution.attempt == claim.attempt)
        .values(status="done", finished_at=now)
    )


def release_shard(
    factory: sessionmaker[Session],
    claim: Claim,
    *,
    now: datetime,
    error: str,
    give_up: bool,
    storage_fault: bool = False,
) -> bool:
    """Give a claimed shard back after a failure: ``queued`` again, or ``failed`` if ``give_up``.

    ``storage_fault``: the attempt failed on the data dir (full disk...), not in the engine; its
    ``executions`` row says ``storage_fault`` and it is not counted (``poison.counted_attempts``).

    Returns:
        False when the lease had already been lost (nothing changed).
    """
    status = ShardStatus.FAILED if give_up else ShardStatus.QUEUED
    with transaction(factory) as s:
        res = s.execute(
            update(Shard)
            .where(*lease_guard(claim, to=status))  # type: ignore[arg-type]
            .values(
                status=status.value,
                lease_owner=None,
                lease_expires_at=None,
                last_error=error[:4000],
                queued_at=now,
                finished_at=now if give_up else None,
            )
            .execution_options(synchronize_session=False)
        )
        s.execute(
            update(Execution)
            .where(Execution.shard_id == claim.shard_id, Execution.attempt == claim.attempt)
            .values(
                status=STORAGE_FAULT if storage_fault else "failed",
                finished_at=now,
                error=error[:4000],
            )
        )
        return bool(res.rowcount == 1)  # type: ignore[attr-defined]


def requeue_expired(session: Session, *, now: datetime) -> list[str]:
    """Move running shards whose lease expired back to ``queued``; return the ids to send.

    A shard that already lost its worker ``POISON_AFTER`` times is split in halves (their ids
    are returned) or, alone with one request, failed (``scheduler.dispatch.poison``).

    Each move is a compare-and-set on (status, attempts, lease): a worker finishing at the same
    moment either commits ``done`` first (the move then matches nothing) or loses its lease.
    """
    from scheduler.dispatch.finalize import begin_finalizing
    from scheduler.dispatch.poison import handle_expired

    expired = session.scalars(
        select(Shard).where(Shard.status == ShardStatus.RUNNING.value, Shard.lease_expires_at < now)
    ).all()
    moved = []
    ended: set[str] = set()
    for shard in expired:
        shard_id, attempts = shard.id, shard.attempts
        children, handled = handle_expired(session, shard, now=now)  # poison: split or fail
        if handled:
            moved.extend(children)
            ended.add(shard.batch_id)
            continue
        res = session.execute(
            update(Shard)
            .where(
                Shard.id == shard_id,
                shard_from(ShardStatus.QUEUED, ShardStatus.RUNNING),
                Shard.attempts == attempts,
                Shard.lease_expires_at < now,
            )
            .values(
                status=ShardStatus.QUEUED.value,
                lease_owner=None,
                queued_at=now,
                last_error=f"lease of attempt {attempts} expired at {now.isoformat()}",
            )
            .execution_options(synchronize_session=False)
        )
        if res.rowcount == 1:  # type: ignore[attr-defined]
            session.execute(
                update(Execution)
                .where(Execution.shard_id == shard_id, Execution.attempt == attempts)
                .values(status="lost", finished_at=now, error="lease expired")
            )
            moved.append(shard_id)
    for batch_id in sorted(ended):  # a failed poison request may have been the last one
        begin_finalizing(session, batch_id)
    return moved
