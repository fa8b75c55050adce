"""Per-tenant quotas: files kept, bytes kept, batches in flight (checked before new work)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from scheduler.domain import BatchStatus
from scheduler.errors import QuotaExceeded
from scheduler.store.tables import Batch, File

# Batches that still hold capacity: not finished in any way.
_IN_FLIGHT = (
    BatchStatus.VALIDATING.value,
    BatchStatus.IN_PROGRESS.value,
    BatchStatus.FINALIZING.value,
    BatchStatus.CANCELLING.value,
)


def check_file_quota(
    session: Session, tenant_id: str, *, max_files: int, max_bytes: int, incoming_bytes: int = 0
) -> None:
    """Refuse a new upload when the tenant already keeps ``max_files`` files or ``max_bytes``.

    Output files gridshift writes do not count (the tenant did not choose to make them).

    Raises:
        QuotaExceeded: a limit is reached (429 with Retry-After; delete files to make room).
    """
    count, used = session.execute(
        select(func.count(), func.coalesce(func.sum(File.bytes), 0)).where(
            File.tenant_id == tenant_id, File.deleted.is_(False), File.purpose == "batch"
        )
    ).one()
    if count >= max_files:
        raise QuotaExceeded(
            f"this tenant keeps {count} input files, its quota is {max_files} "
            "(GRIDSHIFT_TENANT_MAX_FILES): delete files it no longer needs (DELETE /v1/files/ID)"
        )
    if int(used) + incoming_bytes > max_bytes:
        raise QuotaExceeded(
            f"this tenant keeps {int(used)} bytes of input files, its quota is {max_bytes} "
            "(GRIDSHIFT_TENANT_MAX_STORED_BYTES): delete files it no longer needs"
        )


def check_batch_quota(session: Session, tenant_id: str, *, max_in_flight: int) -> None:
    """Refuse a new batch when the tenant has ``max_in_flight`` unfinished batches.

    Raises:
        QuotaExceeded: the limit is reached (429 with Retry-After; wait for batches to finish).
    """
    count = session.scalar(
        select(func.count()).where(Batch.tenant_id == tenant_id, Batch.status.in_(_IN_FLIGHT))
    )
    if (count or 0) >= max_in_flight:
        raise QuotaExceeded(
            f"this tenant has {count} unfinished batches, its quota is {max_in_flight} "
            "(GRIDSHIFT_TENANT_MAX_BATCHES_IN_FLIGHT): wait for some to finish or cancel some"
        )
