"""OpenAI ``/v1/batches``: create (small files validated at once, large ones in the background),
retrieve, list, cancel."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Query, Request
from sqlalchemy.orm import Session

from scheduler.api.deps import FleetDep, SessionDep, SettingsDep, TenantDep
from scheduler.api.schemas import Batch, BatchCreate, BatchList
from scheduler.domain import BatchStatus
from scheduler.errors import PermissionDenied
from scheduler.intake.expiry import parse_expires_after
from scheduler.intake.pending import validate_pending
from scheduler.intake.submit import BatchOptions, create_batch
from scheduler.store import batches as repo
from scheduler.store.quotas import check_batch_quota, hold_batch_quota
from scheduler.store.summaries import batch_summaries, batch_summary
from scheduler.store.tables import Batch as BatchRow
from scheduler.store.tenants import tenant_names

router = APIRouter(prefix="/v1", tags=["batches"])


def _public(session: Session, row: BatchRow) -> Batch:
    return Batch.from_row(row, batch_summary(session, row.id))


@router.post("/batches")
def post_batch(
    body: BatchCreate,
    request: Request,
    background: BackgroundTasks,
    session: SessionDep,
    settings: SettingsDep,
    caller: TenantDep,
    fleet: FleetDep,
) -> Batch:
    """Create a batch: a small input file is validated before the answer (``in_progress`` or
    ``failed``), a large one (over ``GRIDSHIFT_VALIDATE_SYNC_MAX_BYTES``) answers ``validating``
    and is validated after the answer."""
    check_batch_quota(
        session, caller.tenant_id, max_in_flight=settings.tenant_max_batches_in_flight
    )
    options = BatchOptions(
        input_file_id=body.input_file_id,
        endpoint=body.endpoint,
        completion_window=body.completion_window,
        deadline=body.deadline,
        min_quality=body.min_quality,
        sites=tuple(body.sites) if body.sites is not None else None,
        priority=body.priority,
        metadata=body.metadata,
        output_expires_after=parse_expires_after(body.output_expires_after, "output_expires_after"),
    )
    row = create_batch(
        session,
        fleet,
        caller.tenant_id,
        options,
        max_requests=settings.max_requests_per_batch,
        sync_max_bytes=settings.validate_sync_max_bytes,
    )
    hold_batch_quota(session, row, max_in_flight=settings.tenant_max_batches_in_flight)
    session.commit()
    if row.status == BatchStatus.VALIDATING.value and fleet is not None:
        background.add_task(
            validate_pending,
            request.app.state.sessions,
            fleet,
            row.id,
            max_requests=settings.max_requests_per_batch,
        )
    return _public(session, row)


@router.get("/batches/{batch_id}")
def retrieve_batch(session: SessionDep, caller: TenantDep, batch_id: str) -> Batch:
    """One of the caller's batches, with its plan and outcome in ``gridshift``."""
    return _public(session, repo.get_batch(session, caller.tenant_id, batch_id))


@router.get("/batches")
def list_batches(
    session: SessionDep,
    caller: TenantDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    all_tenants: Annotated[
        bool, Query(description="Admin keys only: every tenant's batches (the fleet).")
    ] = False,
) -> BatchList:
    """The caller's batches, newest first, with OpenAI cursor pagination.

    ``all_tenants=true`` (an admin key) lists the whole fleet's, each with ``gridshift.tenant``
    and ``gridshift.own`` (the caller's tenant's: only those can be cancelled with this key);
    with any other key it is refused (403), never silently narrowed.
    """
    if all_tenants and not caller.is_admin:
        raise PermissionDenied(
            "all_tenants=true needs an admin key; drop the parameter to list your own batches"
        )
    scope = None if all_tenants else caller.tenant_id
    rows, has_more = repo.list_batches(session, scope, after=after, limit=limit)
    summaries = batch_summaries(session, [r.id for r in rows])
    if all_tenants:
        names = tenant_names(session, {r.tenant_id for r in rows})
        for r in rows:
            summaries[r.id] = {
                **summaries[r.id],
                "tenant": names.get(r.tenant_id, r.tenant_id),
                "own": r.tenant_id == caller.tenant_id,
            }
    return BatchList.of([Batch.from_row(r, summaries[r.id]) for r in rows], has_more=has_more)


@router.post("/batches/{batch_id}/cancel")
def cancel_batch(session: SessionDep, caller: TenantDep, batch_id: str) -> Batch:
    """Cancel one of the caller's batches (``cancelling``, ``cancelled`` once nothing runs)."""
    row = repo.cancel_batch(session, caller.tenant_id, batch_id)
    session.commit()
    return _public(session, row)
