"""Engine and session factories (no import-time engines)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import Settings
from scheduler.errors import ConfigError


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine for ``url``; SQLite gets WAL, foreign keys and a busy timeout.

    The SQLite file's directory is created if missing.
    """
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("connect_args", {"check_same_thread": False, "timeout": 30})
        engine = create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


# Connections beyond ``max_concurrent_requests`` for work outside the request slots (the
# authentication lookup, /healthz, /metrics scrapes, the startup sweep).
POOL_SPARE_CONNECTIONS = 4


def engine_from_settings(settings: Settings) -> Engine:
    """Create the engine the settings name (default: SQLite in the data directory).

    The pool is sized to the API's concurrency (``max_concurrent_requests`` plus a few spare),
    so requests wait for a turn in the API instead of failing on an exhausted pool.
    """
    url = settings.resolved_database_url
    if url.startswith("sqlite") and ":memory:" in url:
        return make_engine(url)
    return make_engine(
        url,
        pool_size=settings.max_concurrent_requests,
        max_overflow=POOL_SPARE_CONNECTIONS,
        pool_timeout=30,
    )


def sqlite_path(url: str) -> Path | None:
    """The file of an SQLite URL (``None`` for other databases and ``:memory:``)."""
    if not url.startswith("sqlite") or "///" not in url:
        return None
    path = url.split("///", 1)[1].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def existing_store_engine(settings: Settings) -> Engine:
    """The engine of a store that already exists, for commands that only read (or add to) it.

    A read must never leave an empty database behind, so a missing SQLite file is an error
    here instead of being created by the first connection.

    Raises:
        ConfigError: the settings name an SQLite file that does not exist; the message says
            which file and how to make one.
    """
    url = settings.resolved_database_url
    path = sqlite_path(url)
    if path is not None and not path.exists():
        raise ConfigError(
            f"no gridshift store at {path}: run `gridshift demo` to make one with a sample "
            "night, or `gridshift db upgrade` for an empty one; or point GRIDSHIFT_DATA_DIR "
            "(or GRIDSHIFT_DATABASE_URL) at an existing store"
        )
    return make_engine(url)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """A session factory bound to ``engine`` (objects stay usable after commit)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with factory() as session, session.begin():
        yield session
