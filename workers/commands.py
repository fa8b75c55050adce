"""Worker-side commands: ``worker`` (a Celery worker for one pool) and ``demo``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from scheduler.config import get_settings


def register(app: typer.Typer) -> None:
    """Mount ``worker``, ``ping-worker``, ``demo`` and ``run-batch`` on ``app``."""
    from workers.run_batch_command import register_run_batch

    register_run_batch(app)

    @app.command()
    def worker(
        site: Annotated[str, typer.Option("--site", help="Site name in fleet.yaml.")],
        pool: Annotated[str, typer.Option("--pool", help="Pool name at that site.")],
        concurrency: Annotated[
            int, typer.Option("--concurrency", min=1, help="Shards at once (1 = solo pool).")
        ] = 1,
        loglevel: Annotated[str, typer.Option("--loglevel", help="Celery log level.")] = "INFO",
    ) -> None:
        """Run a Celery worker for one pool, consuming the queue ``<site>.<pool>``.

        One worker per GPU pool, ``--pool=solo`` and prefetch 1 (the engine holds the GPU for
        the process's life); ``--concurrency`` above 1 uses a thread pool, for engines that
        call out over HTTP (``openai`` kind).
        """
        from workers.celery_app import create_celery
        from workers.runtime import resolve_fleet

        settings = get_settings()
        fleet = resolve_fleet(settings)
        try:
            fleet.site(site).pool(pool)
        except KeyError as e:
            typer.echo(f"error: {e.args[0]}; check --site/--pool against GRIDSHIFT_FLEET", err=True)
            raise typer.Exit(2) from None
        celery = create_celery(settings)
        celery.gridshift_serves = (site, pool)  # run_shard refuses other pools' shards
        argv = [
            "worker",
            f"--queues={site}.{pool}",
            "--pool=solo" if concurrency == 1 else "--pool=threads",
            f"--concurrency={concurrency}",
            "--prefetch-multiplier=1",
            f"--hostname={site}.{pool}.{os.getpid()}@%h",
            f"--loglevel={loglevel}",
            "--without-gossip",
            "--without-mingle",
        ]
        celery.worker_main(argv)

    @app.command("ping-worker")
    def ping_worker(
        site: Annotated[str, typer.Option("--site", help="Site name in fleet.yaml.")],
        pool: Annotated[str, typer.Option("--pool", help="Pool name at that site.")],
        timeout_s: Annotated[
            float, typer.Option("--timeout-s", min=0.1, help="Seconds to wait for the answer.")
        ] = 5.0,
        any_host: Annotated[
            bool, typer.Option("--any-host", help="Accept a worker of the pool on any host.")
        ] = False,
    ) -> None:
        """Exit 0 when a worker of ``site.pool`` on this host answers a Celery ping (healthcheck).

        What Flower and ``celery inspect ping`` do, over GRIDSHIFT_BROKER_URL (Redis: the
        embedded SQL broker carries no broadcasts). The node names are ``site.pool.pid@host``.
        """
        import socket

        from workers.celery_app import create_celery

        celery = create_celery(get_settings())
        replies = celery.control.ping(timeout=timeout_s) or []
        prefix = f"{site}.{pool}."
        suffix = "" if any_host else f"@{socket.gethostname()}"
        nodes = [n for reply in replies for n in reply]
        alive = [n for n in nodes if n.startswith(prefix) and n.endswith(suffix)]
        if not alive:
            where = "any host" if any_host else socket.gethostname()
            typer.echo(
                f"no worker of {site}.{pool} on {where} answered in {timeout_s:g} s", err=True
            )
            raise typer.Exit(1)
        typer.echo(f"alive: {', '.join(sorted(alive))}")

    @app.command()
    def demo(
        data_dir: Annotated[
            Path | None,
            typer.Option("--data-dir", help="Where the demo keeps its database, model and files."),
        ] = None,
        job: Annotated[
            list[Path] | None,
            typer.Option(
                "--job", help="Job spec to submit, repeatable (default: every jobs/*.yaml)."
            ),
        ] = None,
        online: Annotated[
            bool,
            typer.Option(
                help="Plan on the signal providers (live UK carbon intensity where reachable) "
                "instead of the scripted SYNTHETIC night."
            ),
        ] = False,
        serve: Annotated[
            bool,
            typer.Option(
                "--serve",
                help="Afterwards keep the API and the dashboard up on the demo's night "
                "(on GRIDSHIFT_API_URL's port when free) until Ctrl-C.",
            ),
        ] = False,
    ) -> None:
        """Replay a night on this machine with no server: submit, plan, run, report.

        The nightly jobs of ``jobs/`` are submitted at 18:00 UTC of the latest night wholly in
        the past, planned on SYNTHETIC signals for the sample three-site fleet, run in planned
        slot order without waiting for the hours (the ``transformers`` engine on a tiny model
        built locally) and booked. The store is the data dir's own ``gridshift.db``, so
        ``gridshift schedule``, ``report`` and ``serve`` read it afterwards with no flag.
        """
        from scheduler.commands.common import exit_on_error
        from workers.demo import run_demo

        settings = get_settings()
        with exit_on_error():
            code = run_demo(
                settings,
                data_dir=data_dir,
                job_paths=job,
                online=online,
                serve=serve,
                echo=typer.echo,
            )
        raise typer.Exit(code)
