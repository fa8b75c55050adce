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
        planner: bool = typer.Option(
            True,
            "--planner/--no-planner",
            help="Run the planner loop as a thread (--no-planner: `gridshift planner` runs it).",
        ),
        metrics_port: int = typer.Option(
            -1,
            "--metrics-port",
            help="Serve /metrics and /healthz on this port (default GRIDSHIFT_DISPATCH_METRICS_PORT; "
            "0: none).",
        ),
        metrics_host: str = typer.Option("127.0.0.1", "--metrics-host", help="Exporter interface."),
    ) -> None:
        """Run the dispatch tick: queue due shards, re-queue expired leases, finalise batches;
        deliver webhooks (a thread; with --once, one round after the tick).

        A plain loop in ONE process (run exactly one dispatcher): each tick is idempotent and
        guarded by compare-and-set updates, so a restart at any moment is safe. Tasks are sent
        by name to the queues ``<site>.<pool>`` over GRIDSHIFT_BROKER_URL. Re-planning runs
        beside the tick in a planner thread (one per database), never inside it; with --once
        the tick re-plans inline first (a one-shot step for scripts).
        """
        from scheduler.dispatch.exporter import DispatchState, dispatcher_registry, start_exporter
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
        state = DispatchState()
        port = settings.dispatch_metrics_port if metrics_port < 0 else metrics_port
        if port and not once:
            registry = dispatcher_registry(sessions, state)
            start_exporter(
                registry, state, host=metrics_host, port=port, stale_after_s=3 * period + 60
            )
            typer.echo(f"dispatch: /metrics and /healthz on http://{metrics_host}:{port}")
        supervisor = None
        if planner and not once:
            from scheduler.dispatch.planner_supervisor import PlannerSupervisor

            supervisor = PlannerSupervisor(sessions, settings, fleet).start()
            state.planner = supervisor.health
        from scheduler.dispatch.webhooks import deliver_due, start_webhook_thread

        if not once:
            start_webhook_thread(sessions, settings)  # the outbox, every GRIDSHIFT_WEBHOOK_POLL_S
        while True:
            started = time.monotonic()
            if supervisor is not None:
                supervisor.ensure_alive()  # a planner thread that ended is started again
            try:
                report = tick(sessions, settings, now_utc(), send, fleet=fleet, allow_replan=once)
                state.record()
                typer.echo(
                    f"tick: plan={report.plan_id} queued={len(report.queued)} "
                    f"requeued={len(report.requeued_expired)} resent={len(report.resent_stale)}"
                )
            except Exception as e:  # keep ticking: the next tick retries whatever failed
                state.record(e)
                if once:
                    raise
                logging.getLogger(__name__).exception("tick failed: %s", e)
            if once:
                deliver_due(sessions, settings)
                return
            time.sleep(max(0.0, period - (time.monotonic() - started)))

    @app.command("planner")
    def planner_command(
        once: bool = typer.Option(False, "--once", help="Re-plan once if needed and exit."),
    ) -> None:
        """Run the planner loop alone (one per database; pair with `dispatch --no-planner`).

        Re-plans on new batches (debounced), slot boundaries and forecast updates; a failed
        re-plan leaves the current plan in force and is stored as a `failed` plan version.
        """
        import threading

        from scheduler.dispatch.planner_loop import PlannerLock, PlannerLoop
        from scheduler.fleet import load_fleet
        from scheduler.samples import load_sample_fleet
        from scheduler.store.db import engine_from_settings, session_factory

        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        settings = get_settings()
        fleet = load_fleet(settings.fleet) if settings.fleet else load_sample_fleet()
        engine = engine_from_settings(settings)
        loop = PlannerLoop(session_factory(engine), settings, fleet)
        lock = PlannerLock(engine)
        if once:
            if not lock.acquire():
                typer.echo("another planner holds the lock for this database", err=True)
                raise typer.Exit(1)
            try:
                plan_id = loop.step()
            finally:
                lock.release()
            failed = loop.state.failures
            typer.echo(f"planner: plan={plan_id} trigger={loop.state.last_trigger}")
            if failed:
                typer.echo(f"re-plan failed, current plan kept: {failed[-1]}", err=True)
                raise typer.Exit(1)
            return
        stop = threading.Event()
        try:
            loop.run(stop, lock)
        except KeyboardInterrupt:
            stop.set()
