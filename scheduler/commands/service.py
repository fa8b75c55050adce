"""Service commands: ``serve`` and ``db upgrade``."""

from __future__ import annotations

import typer

from scheduler.config import get_settings


def register(app: typer.Typer) -> None:
    """Mount ``serve`` and ``db`` on ``app``."""
    db = typer.Typer(help="Database schema.", no_args_is_help=True)

    @db.command("upgrade")
    def db_upgrade(revision: str = typer.Argument("head", help="Alembic revision.")) -> None:
        """Create or migrate the schema (SQLite or PostgreSQL, from GRIDSHIFT_DATABASE_URL)."""
        from scheduler.store.db import engine_from_settings
        from scheduler.store.migrate import upgrade

        settings = get_settings()
        engine = engine_from_settings(settings)
        upgrade(engine, revision)
        typer.echo(
            f"database at {engine.url.render_as_string(hide_password=True)} is at {revision}"
        )

    app.add_typer(db, name="db")

    @app.command()
    def serve(
        host: str = typer.Option("127.0.0.1", help="Interface to bind."),
        port: int = typer.Option(8080, help="TCP port."),
        upgrade_db: bool = typer.Option(True, help="Run `db upgrade` first."),
    ) -> None:
        """Run the HTTP API (OpenAI Batch API, gridshift endpoints, dashboard)."""
        import asyncio

        import uvicorn

        from scheduler.api.app import create_app
        from scheduler.api.serving import AcceptErrorLog, raise_open_file_limit, uvicorn_options
        from scheduler.store.db import engine_from_settings
        from scheduler.store.migrate import upgrade

        settings = get_settings()
        if upgrade_db:
            upgrade(engine_from_settings(settings))
        raise_open_file_limit()
        config = uvicorn.Config(
            create_app(settings),
            host=host,
            port=port,
            log_level="info",
            **uvicorn_options(settings),
        )
        server = uvicorn.Server(config)

        async def main() -> None:
            asyncio.get_running_loop().set_exception_handler(AcceptErrorLog())
            await server.serve()

        asyncio.run(main())
