"""Operator endpoints of the console: a batch's explanation and the workers view."""

from __future__ import annotations

from fastapi import APIRouter

from scheduler.api.deps import AdminDep, FleetDep, SessionDep, SettingsDep, TenantDep
from scheduler.errors import ConfigError
from scheduler.review.batch_review import load_batch
from scheduler.review.explain import Explanation, explain_batch
from scheduler.review.workers_view import WorkersView, workers_view
from scheduler.store.tables import now_utc

router = APIRouter(prefix="/v1", tags=["review"])


@router.get(
    "/batches/{batch_id}/explain", response_model=Explanation, summary="Why here and why now"
)
def get_explanation(
    batch_id: str, session: SessionDep, fleet: FleetDep, caller: TenantDep
) -> Explanation:
    """Where and when the batch runs against running at once, the next-best option, the limit.

    Raises:
        NotFound: no such batch, or another tenant's.
        ConfigError: no fleet is configured (503).
    """
    if fleet is None:
        raise ConfigError("no fleet is configured: set GRIDSHIFT_FLEET to a fleet.yaml")
    batch = load_batch(session, batch_id, None if caller.is_admin else caller.tenant_id)
    return explain_batch(session, fleet, batch)


@router.get("/workers", response_model=WorkersView, summary="Pools, workers, leases, retries")
def get_workers(
    session: SessionDep, fleet: FleetDep, settings: SettingsDep, _admin: AdminDep
) -> WorkersView:
    """Every pool with its shards by status, every worker that sent a presence beat or holds a
    lease (live: a lease, or a beat within 3 heartbeats), retried shards (admin).

    Raises:
        PermissionDenied: not an admin key (403).
        ConfigError: no fleet is configured (503).
    """
    if fleet is None:
        raise ConfigError("no fleet is configured: set GRIDSHIFT_FLEET to a fleet.yaml")
    return workers_view(session, fleet, now_utc(), stale_after_s=3 * settings.heartbeat_s)
