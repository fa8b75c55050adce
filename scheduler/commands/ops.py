"""Operations commands: ``dispatch`` (the periodic tick)."""

from __future__ import annotations

import logging
import time

import typer

from scheduler.config import get_settings


def register(app: typer.Typer) -> None:
    """Mount ``dispatch`` on ``app``."""

    @app.command()
    def dispatch(
        once: bool = typer.Option(False, "--once", help="Run one tick and exit."),
        interval_s: float = typer.Option(
            0.0, "--interval-s", help="Seconds between ticks (default GRIDSHIFT_TICK_S)."
        ),
    ) -> None:
        """Run the dispatch tick: re-plan, queue due shards, re-queue expired leases.

        A plain loop in ONE process (run exactly one dispatcher): each tick is idempotent and
        guarded by compare-and-set updates, so a restart at any moment is safe. Tasks are sent
        by name to the queues ``<site>.<pool>`` over GRIDSHIFT_BROKER_URL.
        """
        from scheduler.dispatch.send import celery_client, celery_sender
        from scheduler.dispatch.tick import tick
        from scheduler.fleet import load_fleet
        from scheduler.samples import load_sample_fleet
        from scheduler.store.db import engine_from_settings, session_factory
        from scheduler.store.tables import now_utc

        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        settings = get_settings()
        fleet = load_fleet(settings.fleet) if settings.fleet else load_sample_fleet()
        sessions = session_factory(engine_from_settings(settings))
        send = celery_sender(celery_client(settings))
        period = interval_s or settings.tick_s
        while True:
            started = time.monotonic()
            try:
                report = tick(sessions, settings, now_utc(), send, fleet=fleet)
                typer.echo(
                    f"tick: plan={report.plan_id} queued={len(report.queued)} "
                    f"requeued={len(report.requeued_expired)} resent={len(report.resent_stale)}"
                )
            except Exception as e:  # keep ticking: the next tick retries whatever failed
                if once:
                    raise
                logging.getLogger(__name__).exception("tick failed: %s", e)
            if once:
                return
            time.sleep(max(0.0, period - (time.monotonic() - started)))
