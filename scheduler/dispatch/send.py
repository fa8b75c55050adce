"""Sending tasks by name (the scheduler never imports ``workers``) and the broker URL."""

from __future__ import annotations

import logging
from typing import Any

from scheduler.config import Settings

log = logging.getLogger(__name__)


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
    # task-sent events for Flower and `celery events` (Celery disables events by itself on the
    # embedded SQL transport, which has no fanout exchange).
    app.conf.task_send_sent_event = True
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


# A queue no worker consumes, holding one marker message. If the marker is gone, the broker lost
# its messages (a Redis restart without persistence, a flushed database, a new broker).
SENTINEL_QUEUE = "gridshift.sentinel"


class CelerySender:
    """``send(name, *args, queue=...)`` over ``app.send_task`` (no ETA, no countdown), and the
    broker's sentinel check ``lost_messages()``."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, name: str, *args: Any, queue: str) -> None:
        """Send task ``name`` with ``args`` to ``queue`` (raises if the broker is unreachable)."""
        self.app.send_task(name, args=list(args), queue=queue, routing_key=queue)

    def lost_messages(self) -> bool:
        """Whether the broker lost its messages since the last call (the sentinel is gone).

        Puts a fresh sentinel when it is missing, so the answer is True once per loss (and on
        a dispatcher's first tick against an empty broker, when re-sending is harmless).
        """
        from kombu.exceptions import ChannelError

        with self.app.connection_for_write() as conn:
            queue = conn.SimpleQueue(SENTINEL_QUEUE)
            try:
                try:
                    size = queue.qsize()
                except ChannelError:  # Redis: an empty list does not exist ("no queue")
                    size = 0
                if size:
                    return False
                queue.put({"gridshift": "sentinel"})
                return True
            finally:
                close_channel_session(queue.channel)
                queue.close()


def close_channel_session(channel: Any) -> None:
    """Close the database session of a kombu SQLAlchemy-transport channel, if it has one.

    kombu's SQLAlchemy channel opens a session on first use and never closes it, not even when
    the channel closes; a read (``qsize``) leaves it inside a transaction, holding a pooled
    connection until the garbage collector breaks the channel's reference cycles. The sentinel
    check ran once per tick, so the broker engine's pool (5 + 10 overflow) ran dry: after
    database terminations, ``QueuePool limit of size 5 overflow 10 reached`` tick after tick.
    Closing the session (rolling back whatever it holds, on error paths too) returns it.
    """
    session = getattr(channel, "_session", None)
    if session is None:
        return
    try:
        session.close()
    except Exception as e:  # a dead connection: it is invalidated, the pool replaces it
        log.warning("closing the broker channel's session failed: %r", e)
    finally:
        channel._session = None


def celery_sender(app: Any) -> CelerySender:
    """The sender ``gridshift dispatch`` and the tick task use."""
    return CelerySender(app)
