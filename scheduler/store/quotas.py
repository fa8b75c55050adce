"""Per-tenant quotas: files kept, bytes kept, batches in flight.

Each quota is checked twice. ``check_*`` is a cheap early refusal before any work (a full
tenant is not made to upload or validate first). ``hold_*`` is the authoritative check: it runs
in the transaction that adds the new file or batch, after that row is flushed, under a lock on
the tenant's row (``SELECT ... FOR NO KEY UPDATE`` on PostgreSQL, which does not conflict with
the key-share lock the new row's foreign key takes; on SQLite the flushed insert already holds
the database's write lock). Two creates of one tenant, in one process or on two API replicas,
therefore count each other: the quota cannot be overshot by a concurrent burst.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from scheduler.domain import BatchStatus
from scheduler.errors import QuotaExceeded
from scheduler.store.tables import Batch, File, Tenant

# Batches that still hold capacity: not finished in any way.
_IN_FLIGHT = (
    BatchStatus.VALIDATING.value,
    BatchStatus.IN_PROGRESS.value,
    BatchStatus.FINALIZING.value,
    BatchStatus.CANCELLING.value,
)


def _files_kept(session: Session, tenant_id: str) -> tuple[int, int]:
    count, used = session.execute(
        select(func.count(), func.coalesce(func.sum(File.bytes), 0)).where(
            File.tenant_id == tenant_id, File.deleted.is_(False), File.purpose == "batch"
        )
    ).one()
    return int(count), int(used)


def _batches_in_flight(session: Session, tenant_id: str) -> int:
    count = session.scalar(
        select(func.count()).where(Batch.tenant_id == tenant_id, Batch.status.in_(_IN_FLIGHT))
    )
    return int(count or 0)


def _lock_tenant(session: Session, tenant_id: str) -> None:
    """Serialise the quota checks of one tenant until this transaction ends."""
    session.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update(key_share=True))


def _refuse_files(count: int, used: int, *, max_files: int, max_bytes: int) -> None:
    if count > max_files:
        raise QuotaExceeded(
            f"this tenant keeps {count - 1} input files, its quota is {max_files} "
            "(GRIDSHIFT_TENANT_MAX_FILES): delete files it no longer needs (DELETE /v1/files/ID)"
        )
    if used > max_bytes:
        raise QuotaExceeded(
            f"this tenant's input files would take {used} bytes, its quota is {max_bytes} "
            "(GRIDSHIFT_TENANT_MAX_STORED_BYTES): delete files it no longer needs"
        )


def check_file_quota(
    session: Session, tenant_id: str, *, max_files: int, max_bytes: int, incoming_bytes: int = 0
) -> None:
    """Refuse a new upload early when the tenant already keeps ``max_files`` files or
    ``max_bytes`` (``hold_file_quota`` decides under a lock, in the insert's transaction).

    Output files gridshift writes do not count (the tenant did not choose to make them).

    Raises:
        QuotaExceeded: a limit is reached (429 with Retry-After; delete files to make room).
    """
    count, used = _files_kept(session, tenant_id)
    _refuse_files(count + 1, used + incoming_bytes, max_files=max_files, max_bytes=max_bytes)


def hold_file_quota(session: Session, tenant_id: str, *, max_files: int, max_bytes: int) -> None:
    """In the transaction that flushed a new input file: lock the tenant, count again with that
    file included, and refuse if it would go over (the caller then rolls back).

    Raises:
        QuotaExceeded: the new file would break ``max_files`` or ``max_bytes``.
    """
    _lock_tenant(session, tenant_id)
    count, used = _files_kept(session, tenant_id)
    _refuse_files(count, used, max_files=max_files, max_bytes=max_bytes)


def _refuse_batches(count: int, *, max_in_flight: int) -> None:
    if count > max_in_flight:
        raise QuotaExceeded(
            f"this tenant has {count - 1} unfinished batches, its quota is {max_in_flight} "
            "(GRIDSHIFT_TENANT_MAX_BATCHES_IN_FLIGHT): wait for some to finish or cancel some"
        )


def check_batch_quota(session: Session, tenant_id: str, *, max_in_flight: int) -> None:
    """Refuse a new batch early when the tenant has ``max_in_flight`` unfinished batches
    (``hold_batch_quota`` decides under a lock, in the insert's transaction).

    Raises:
        QuotaExceeded: the limit is reached (429 with Retry-After; wait for batches to finish).
    """
    _refuse_batches(_batches_in_flight(session, tenant_id) + 1, max_in_flight=max_in_flight)


def hold_batch_quota(session: Session, batch: Batch, *, max_in_flight: int) -> None:
    """In the transaction that flushed ``batch``: lock its tenant, count the unfinished
    batches again (``batch`` included if it is unfinished) and refuse if over the quota.

    Raises:
        QuotaExceeded: this batch would be one too many (the caller then rolls back).
    """
    if batch.status not in _IN_FLIGHT:
        return  # a batch that failed validation holds no capacity
    _lock_tenant(session, batch.tenant_id)
    _refuse_batches(_batches_in_flight(session, batch.tenant_id), max_in_flight=max_in_flight)
