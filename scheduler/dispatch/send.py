"""Sending tasks by name (the scheduler never imports ``workers``) and the broker URL."""

from __future__ import annotations

from typing import Any

from scheduler.config import Settings


def broker_url(settings: Settings) -> str:
    """The Celery broker: ``GRIDSHIFT_BROKER_URL``, or embedded on the database.

    Embedded means kombu's SQLAlchemy transport on the same database (``sqla+<url>``): it works
    across processes on one machine with no server (SQLite file) and needs nothing beyond the
    database in production-like setups; Redis is the production broker.
    """
    if settings.broker_url:
        return settings.broker_url
    url = settings.resolved_database_url
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return f"sqla+{url}"


def celery_client(settings: Settings) -> Any:
    """A Celery app that only sends (no tasks registered): what ``gridshift dispatch`` uses."""
    from celery import Celery

    app = Celery("gridshift-dispatch", broker=broker_url(settings), set_as_current=False)
    app.conf.broker_connection_retry_on_startup = True
    app.conf.broker_transport_options = transport_options(settings)
    return app


def transport_options(settings: Settings) -> dict[str, Any]:
    """Broker transport options: Redis gets a visibility timeout; the SQLAlchemy transport
    passes its options to ``create_engine``, so it gets none."""
    url = broker_url(settings)
    if url.startswith(("redis://", "rediss://")):
        return {"visibility_timeout": visibility_timeout_s(settings)}
    return {}


def visibility_timeout_s(settings: Settings) -> int:
    """Redis visibility timeout: longer than any shard (duplicates are harmless but wasteful)."""
    return int(max(3600.0, 10 * settings.lease_s))


def celery_sender(app: Any) -> Any:
    """``send(name, *args, queue=...)`` over ``app.send_task`` (no ETA, no countdown)."""

    def send(name: str, *args: Any, queue: str) -> None:
        app.send_task(name, args=list(args), queue=queue, routing_key=queue)

    return send
