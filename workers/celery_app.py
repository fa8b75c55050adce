"""The Celery application of a gridshift worker: ``create_celery(settings)``."""

from __future__ import annotations

from celery import Celery

from scheduler.config import Settings
from scheduler.dispatch.send import broker_url, transport_options


def create_celery(settings: Settings) -> Celery:
    """A Celery app for ``settings`` with the tasks ``gridshift.run_shard`` and ``gridshift.tick``.

    Reliability settings (ARCHITECTURE.md "Workers"): late acks and reject on worker loss, so a
    killed worker's message is redelivered; prefetch 1, so a worker never hoards shards; no
    result backend (the database holds every outcome). The broker is ``GRIDSHIFT_BROKER_URL``
    or, when empty, kombu's SQLAlchemy transport on the database (works across processes with
    no server).
    """
    app = Celery("gridshift", broker=broker_url(settings), set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_default_queue="gridshift",
        task_create_missing_queues=True,
        task_routes={"gridshift.tick": {"queue": "gridshift.dispatch"}},
        broker_transport_options=transport_options(settings),
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        # Task events on, as Celery shops run it: Flower (and any `celery events` receiver)
        # sees task-sent, -received, -started, -succeeded, -failed without broadcasting
        # `enable_events` itself (which the embedded broker cannot carry).
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_serializer="json",
        accept_content=["json"],
    )
    app.gridshift_settings = settings
    from workers.tasks import register_tasks

    register_tasks(app)
    return app
