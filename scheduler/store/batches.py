"""Batch repository: rows, status transitions with their timestamps, bulk request/part inserts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from itertools import chain, islice
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from scheduler.clock import now_s as now_s
from scheduler.domain import BatchStatus, ShardStatus, can_transition_batch
from scheduler.errors import InvalidTransition, NotFound
from scheduler.store.paging import cursor_page, new_id, storable
from scheduler.store.shard_moves import shard_from
from scheduler.store.tables import Batch, BatchPart, BatchRequest, Shard
from scheduler.store.webhooks import record_batch_event

BATCH_PREFIX = "batch_"
INSERT_CHUNK_ROWS = 5_000

# The timestamp column set when a batch enters each status (OpenAI's ``*_at`` fields).
_STATUS_AT = {
    BatchStatus.IN_PROGRESS: "in_progress_at",
    BatchStatus.FINALIZING: "finalizing_at",
    BatchStatus.COMPLETED: "completed_at",
    BatchStatus.FAILED: "failed_at",
    BatchStatus.EXPIRED: "expired_at",
    BatchStatus.CANCELLING: "cancelling_at",
    BatchStatus.CANCELLED: "cancelled_at",
}


def new_batch(
    session: Session,
    *,
    tenant_id: str,
    endpoint: str,
    input_file_id: str,
    completion_window: str,
    deadline: datetime,
    created_at: int,
    min_quality: float | None = None,
    sites: list[str] | None = None,
    priority: float = 1.0,
    metadata: Mapping[str, str] | None = None,
    batch_id: str | None = None,
) -> Batch:
    """Add a batch in status ``validating`` (flushed, not committed); ``expires_at`` = deadline."""
    batch = Batch(
        id=batch_id or new_id(BATCH_PREFIX),
        tenant_id=tenant_id,
        endpoint=endpoint,
        input_file_id=input_file_id,
        completion_window=completion_window,
        status=BatchStatus.VALIDATING.value,
        created_at=created_at,
        expires_at=int(deadline.timestamp()),
        request_total=0,
        request_completed=0,
        request_failed=0,
        errors=None,
        metadata_=dict(metadata) if metadata is not None else None,
        deadline=deadline,
        model=None,
        min_quality=min_quality,
        sites=list(sites) if sites is not None else None,
        priority=priority,
    )
    session.add(batch)
    session.flush()
    return batch


def transition_batch(batch: Batch, dst: BatchStatus, *, at: int | None = None) -> None:
    """Move ``batch`` to ``dst`` and stamp the matching ``*_at`` field (Unix seconds).

    Raises:
        InvalidTransition: ``dst`` is not reachable from the batch's status.
    """
    src = BatchStatus(batch.status)
    if not can_transition_batch(src, dst):
        raise InvalidTransition(
            f"batch {batch.id} is {src.value} and cannot become {dst.value}"
            + (" (it has already finished)" if not _reachable(src) else "")
        )
    batch.status = dst.value
    column = _STATUS_AT.get(dst)
    if column is not None:
        setattr(batch, column, now_s() if at is None else at)


def _reachable(src: BatchStatus) -> bool:
    return any(can_transition_batch(src, d) for d in BatchStatus)


def get_batch(
    session: Session, tenant_id: str | None, batch_id: str, *, for_update: bool = False
) -> Batch:
    """Return the batch ``batch_id`` of ``tenant_id`` (None: any tenant, for internal callers).

    With ``for_update`` the row is locked until the transaction ends (PostgreSQL), so a status
    change is not lost to a concurrent one.

    Raises:
        NotFound: no such batch, or another tenant's.
    """
    batch = (
        session.get(
            Batch, batch_id, with_for_update=for_update or None, populate_existing=for_update
        )
        if storable(batch_id)
        else None
    )
    if batch is None or (tenant_id is not None and batch.tenant_id != tenant_id):
        raise NotFound(f"no batch {batch_id[:80]!r}: list yours with GET /v1/batches")
    return batch


def list_batches(
    session: Session, tenant_id: str | None, *, after: str | None = None, limit: int = 20
) -> tuple[list[Batch], bool]:
    """One page of the tenant's batches (every tenant's with ``None``: admin callers only),
    newest first; returns ``(batches, has_more)``."""
    stmt = select(Batch) if tenant_id is None else select(Batch).where(Batch.tenant_id == tenant_id)
    return cursor_page(session, stmt, Batch.id, after=after, limit=limit)


def insert_rows(
    session: Session, table: Any, rows: Iterable[dict[str, Any]], *, chunk: int = INSERT_CHUNK_ROWS
) -> int:
    """Bulk-insert ``rows`` into ``table`` (an ORM class) in the session's transaction.

    PostgreSQL gets ``COPY ... FROM STDIN`` (several times faster than multi-row INSERTs for
    50,000 rows); other databases an executemany in chunks of ``chunk`` rows. Every row must
    have the same keys. Returns the number of rows.
    """
    it = iter(rows)
    total = 0
    if session.get_bind().dialect.name == "postgresql":
        first = next(it, None)
        if first is None:
            return 0
        columns = list(first)
        names = ", ".join(f'"{c}"' for c in columns)
        dbapi = session.connection().connection.driver_connection
        assert dbapi is not None
        with (
            dbapi.cursor() as cur,
            cur.copy(f'COPY "{table.__tablename__}" ({names}) FROM STDIN') as copy,
        ):
            for row in chain((first,), it):
                copy.write_row([row[c] for c in columns])
                total += 1
        return total
    while block := list(islice(it, chunk)):
        session.execute(insert(table), block)
        total += len(block)
    return total


def insert_requests(session: Session, rows: Iterable[dict[str, Any]]) -> int:
    """Bulk-insert ``batch_requests`` rows (dicts of column values); returns the count."""
    return insert_rows(session, BatchRequest, rows)


def insert_parts(session: Session, rows: Iterable[dict[str, Any]]) -> int:
    """Bulk-insert ``batch_parts`` rows (dicts of column values); returns the count."""
    return insert_rows(session, BatchPart, rows)


def cancel_batch(session: Session, tenant_id: str | None, batch_id: str) -> Batch:
    """Ask a batch to stop: ``cancelling``, then ``cancelled`` at once if no shard is running.

    Shards not yet running (``planned``, ``queued``) are cancelled in the same transaction, so a
    worker's compare-and-set claim on them fails afterwards. If a shard is running, the batch
    stays ``cancelling`` and the execution side finishes the move when the shard ends. Cancelling
    a batch already ``cancelling`` is a no-op. The caller commits.

    Raises:
        NotFound: no such batch of this tenant.
        InvalidTransition: the batch has already finished (completed, failed, expired, cancelled).
    """
    batch = get_batch(session, tenant_id, batch_id, for_update=True)
    if batch.status != BatchStatus.CANCELLING.value:
        transition_batch(batch, BatchStatus.CANCELLING)
    session.execute(
        update(Shard)
        .where(
            Shard.batch_id == batch.id,
            shard_from(ShardStatus.CANCELLED, ShardStatus.PLANNED, ShardStatus.QUEUED),
        )
        .values(status=ShardStatus.CANCELLED.value)
    )
    running = session.scalar(
        select(func.count())
        .select_from(Shard)
        .where(Shard.batch_id == batch.id, Shard.status == ShardStatus.RUNNING.value)
    )
    if not running:
        transition_batch(batch, BatchStatus.CANCELLED)
        session.flush()
        record_batch_event(session, batch.id, BatchStatus.CANCELLED.value)
    session.flush()
    return batch
