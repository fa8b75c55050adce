"""Prometheus ``/metrics``: store-backed gauges and counters, read at scrape time."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from scheduler.api.deps import SessionDep, SettingsDep, get_admin, get_caller

router = APIRouter(tags=["metrics"])


def _registry(request: Request) -> CollectorRegistry:
    registry: CollectorRegistry = request.app.state.metrics_registry
    return registry


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
def metrics(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    """Process and HTTP request families, and (``GRIDSHIFT_METRICS_STORE``, default true) queue
    depth per pool, shards and batches by status, tokens/s, ledger energy and CO2.

    Fleet-wide aggregates only (no tenant names or batch ids). With
    ``GRIDSHIFT_METRICS_PUBLIC=true`` (the default for one machine) it needs no key, as
    Prometheus scrapers expect; with ``false`` (the compose file) it needs an admin key.
    """
    if not settings.metrics_public:
        get_admin(get_caller(request, session, settings))
    return Response(generate_latest(_registry(request)), media_type=CONTENT_TYPE_LATEST)
