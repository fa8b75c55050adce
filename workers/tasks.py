"""Thin Celery tasks, named explicitly; the logic lives in ``workers.execute`` and dispatch."""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import Celery
from celery.signals import worker_ready, worker_shutdown

from scheduler.config import Settings
from workers.execute import describe
from workers.presence import PresenceBeat
from workers.runtime import WorkerRuntime

log = logging.getLogger(__name__)

_runtime: WorkerRuntime | None = None
_presence: PresenceBeat | None = None
_lock = threading.Lock()


def runtime_for(
    settings: Settings, serves: tuple[str, str] | None = None, node: str | None = None
) -> WorkerRuntime:
    """The process-wide runtime (engine loaded once per worker process, reused across shards).

    ``serves`` is the worker's ``(site, pool)`` (``gridshift worker --site --pool``). ``node``
    is the Celery node name (``site.pool.pid@host``): leases, executions and heartbeats then
    carry the name Flower and ``celery events`` show for the same worker.
    """
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = WorkerRuntime.from_settings(settings, serves=serves)
            if node:
                _runtime.worker_id = node
        return _runtime


def close_runtime(**_: Any) -> None:
    """Release the process's engine (vLLM's engine-core processes with it) at worker shutdown.

    Connected to Celery's ``worker_shutdown`` signal: without it a stopped worker leaves
    vLLM's engine-core and model-runner processes behind, holding the GPU (or CPU memory).
    """
    with _lock:
        runtime = _runtime
    if runtime is not None:
        try:
            runtime.engine_cache.close()
        except Exception:  # shutting down anyway; say so and go on
            log.warning("closing the engine at worker shutdown failed", exc_info=True)


def _start_presence(app: Celery, settings: Settings, node: str) -> None:
    """Begin the worker's presence beat as ``node`` (once per process, pool workers only)."""
    global _presence
    serves: tuple[str, str] | None = getattr(app, "gridshift_serves", None)
    if serves is None or _presence is not None:
        return
    from scheduler.store.db import engine_from_settings, session_factory

    sessions = session_factory(engine_from_settings(settings))
    _presence = PresenceBeat(sessions, node, serves[0], serves[1], settings.heartbeat_s)
    _presence.storage = runtime_for(settings, serves, node).storage  # a full disk shows
    _presence.start()


def _stop_presence(**_: Any) -> None:
    """Leave the presence row saying ``stopped`` at a clean shutdown."""
    if _presence is not None:
        _presence.stop()


def _presence_running(shard_id: str | None) -> None:
    if _presence is not None:
        _presence.running(shard_id)


def register_tasks(app: Celery) -> None:
    """Register ``gridshift.run_shard`` and ``gridshift.tick`` on ``app``."""
    settings: Settings = app.gridshift_settings
    serves: tuple[str, str] | None = getattr(app, "gridshift_serves", None)
    worker_shutdown.connect(close_runtime, weak=False)
    worker_shutdown.connect(_stop_presence, weak=False)

    def on_ready(sender: Any = None, **_: Any) -> None:
        if sender is not None and getattr(sender, "app", None) is app:
            _start_presence(app, settings, str(sender.hostname))

    worker_ready.connect(on_ready, weak=False)

    @app.task(name="gridshift.run_shard", acks_late=True, reject_on_worker_lost=True, bind=True)
    def run_shard_task(self: Any, shard_id: str) -> dict[str, Any]:
        """Run one shard (idempotent: a duplicate message finds it claimed or done)."""
        runtime = runtime_for(settings, serves, self.request.hostname)
        _presence_running(shard_id)
        try:
            outcome = runtime.run(shard_id)
        finally:
            _presence_running(None)
        return describe(outcome)

    @app.task(name="gridshift.tick")
    def tick_task() -> dict[str, Any]:
        """One dispatcher tick (for deployments that drive it with Celery beat).

        It never re-plans: run `gridshift planner` beside beat (the tick never waits on a solve).
        """
        from scheduler.dispatch.send import celery_sender
        from scheduler.dispatch.tick import tick
        from scheduler.store.tables import now_utc

        rt = runtime_for(settings, serves)
        report = tick(
            rt.sessions,
            settings,
            now_utc(),
            celery_sender(app),
            fleet=rt.fleet,
            allow_replan=False,
        )
        return {"queued": len(report.queued), "plan_id": report.plan_id}
