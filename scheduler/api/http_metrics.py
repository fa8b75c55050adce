"""HTTP request metrics for the API, by the maintained ``prometheus-fastapi-instrumentator``.

Families (per replica, so a sum over replicas is the fleet's traffic):

- ``http_requests_total{handler, method, status}``: requests answered, ``handler`` being the
  route template (``/v1/batches/{batch_id}``), never the raw path, so ids do not explode the
  series; requests no route matched count under ``handler="none"``.
- ``http_request_duration_seconds{handler, method, status}``: a latency histogram.

The middleware is added after the request guard, so it is the outermost layer: 429 and 503
answers of the guard are counted and timed like any other.
"""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from prometheus_fastapi_instrumentator import Instrumentator, metrics

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def install_http_metrics(app: FastAPI, registry: CollectorRegistry) -> None:
    """Count and time every request of ``app`` into ``registry`` (``/metrics`` itself aside)."""
    instrumentator = Instrumentator(
        should_group_status_codes=False,
        should_ignore_untemplated=False,
        should_group_untemplated=True,
        # No in-progress gauge: the middleware would register it on every build of the
        # middleware stack (a duplicate-series error on the app's own registry).
        should_instrument_requests_inprogress=False,
        excluded_handlers=["/metrics"],
        registry=registry,
    )
    instrumentator.add(metrics.requests(registry=registry))
    instrumentator.add(metrics.latency(buckets=LATENCY_BUCKETS_S, registry=registry))
    instrumentator.instrument(app)
