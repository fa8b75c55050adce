"""Prometheus ``/metrics``: store-backed gauges and counters, read at scrape time."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from scheduler.review.metrics import make_registry

router = APIRouter(tags=["metrics"])


def _registry(request: Request) -> CollectorRegistry:
    registry: CollectorRegistry | None = getattr(request.app.state, "metrics_registry", None)
    if registry is None:
        registry = request.app.state.metrics_registry = make_registry(request.app.state.sessions)
    return registry


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
def metrics(request: Request) -> Response:
    """Queue depth per pool, shards and batches by status, tokens/s, ledger energy and CO2.

    Fleet-wide aggregates only (no tenant names or batch ids), so it needs no key, as
    Prometheus scrapers expect; put it behind the reverse proxy if that is too open.
    """
    return Response(generate_latest(_registry(request)), media_type=CONTENT_TYPE_LATEST)
