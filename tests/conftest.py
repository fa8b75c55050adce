"""Shared fixtures: settings on a temporary data dir, migrated SQLite and PostgreSQL, Redis.

Real servers: unreachable means skip locally and FAIL under ``CI=true``.

Lanes (``make test-fast`` runs ``-m "not integration and not e2e and not slow"``): the lane
markers are applied here, by directory and by the fixtures a test uses (``lanes``), and a test
left in the fast lane that starts a process, builds a model or reaches PostgreSQL or Redis fails
at once saying which marker it needs (``_fast_lane_guard``), so nothing slow enters it silently.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
from lane_markers import apply_lane_markers, fast_lane_guard
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import Settings
from scheduler.store.db import make_engine, session_factory
from scheduler.store.migrate import upgrade
from tests.clock_pin import PINNED_AT, pin

_fast_lane_guard = fast_lane_guard


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Lane markers before ``-m`` selects (see tests/lane_markers.py)."""
    apply_lane_markers(config, items)


REPO_ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get(
    "GRIDSHIFT_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("GRIDSHIFT_TEST_REDIS_URL", "redis://127.0.0.1:6379")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(what: str) -> None:
    """Skip locally, fail under CI, when a real server or shared data is missing."""
    msg = f"{what} is unavailable"
    if IN_CI:
        pytest.fail(f"{msg} (CI=true: integration tests must not skip; start it, see .ci/run)")
    pytest.skip(msg)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared traces and examples (``GRIDSHIFT_SHARED_DIR`` or ``../shared``)."""
    path = Path(os.environ.get("GRIDSHIFT_SHARED_DIR", REPO_ROOT.parent / "shared"))
    if not (path / "examples" / "planning").is_dir():
        unavailable(f"shared data at {path} (set GRIDSHIFT_SHARED_DIR)")
    return path


@pytest.fixture
def pin_clock(monkeypatch: pytest.MonkeyPatch) -> Callable[[datetime], datetime]:
    """Pin gridshift's clock for this test: ``pin(at)`` makes it read ``at`` now, ticking.

    It sets ``GRIDSHIFT_CLOCK`` anchored at the real time of the call (``clock.clock_setting``),
    so this process and every process the test spawns (API, dispatcher, workers: they inherit
    the environment) compute the same now. Restored after the test.
    """

    return lambda at: pin(monkeypatch, at)


@pytest.fixture
def pinned_now(pin_clock: Callable[[datetime], datetime]) -> datetime:
    """gridshift's clock pinned at ``PINNED_AT`` (ticking in real time); returns that instant."""
    return pin_clock(PINNED_AT)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings on a fresh data directory with an SQLite database inside it."""
    return Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'gs.db'}")


@pytest.fixture(scope="session")
def migrated_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite file migrated to head once per session; ``sqlite_engine`` copies it per test.

    A byte copy of a migrated database is that database: the tests get the same schema and
    ``alembic_version`` as a per-test ``upgrade`` without paying for the migrations each time.
    """
    path = tmp_path_factory.mktemp("sqlite-template") / "migrated.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


@pytest.fixture
def sqlite_engine(settings: Settings, migrated_sqlite_template: Path) -> Iterator[Engine]:
    """A migrated SQLite database (fresh per test: a copy of the session's migrated template)."""
    url = settings.resolved_database_url
    target = Path(url.split("///", 1)[1])
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(migrated_sqlite_template, target)
    engine = make_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(sqlite_engine: Engine) -> sessionmaker[Session]:
    """A session factory on the migrated SQLite database."""
    return session_factory(sqlite_engine)


def _create_pg_database() -> str:
    import psycopg

    name = f"gridshift_test_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as e:
        unavailable(f"PostgreSQL at {PG_ADMIN_URL} ({e})")
    return name


def _drop_pg_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """URL of a fresh, migrated PostgreSQL database for this test session (dropped after)."""
    name = _create_pg_database()
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    yield url
    _drop_pg_database(name)


@pytest.fixture
def fresh_pg_url() -> Iterator[str]:
    """URL of an empty (unmigrated) PostgreSQL database, dropped after the test."""
    name = _create_pg_database()
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    _drop_pg_database(name)


REDIS_CLAIM_KEY = "gridshift-test-claim"


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis URL on an EMPTY database number claimed for this test, flushed after it.

    A database is claimed with ``SET NX`` on a marker key only if it held no keys, so parallel
    test runs (and anything else using this Redis) are never flushed by a test.
    """
    import random

    import redis

    numbers = list(range(1, 16))
    random.shuffle(numbers)
    for db in numbers:
        url = f"{REDIS_URL}/{db}"
        client = redis.Redis.from_url(url, socket_connect_timeout=3)
        try:
            empty = client.dbsize() == 0
        except redis.exceptions.ConnectionError as e:
            unavailable(f"Redis at {REDIS_URL} ({e})")
        if empty and client.set(REDIS_CLAIM_KEY, os.getpid(), nx=True, ex=3600):
            break
        client.close()
    else:
        pytest.fail(f"no empty Redis database among 1-15 at {REDIS_URL}: free one (FLUSHDB)")
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight Llama with its tokenizer, built once per session (no download)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        unavailable("torch (the tiny model needs the cpu extra: pip install -e '.[cpu]')")
    from workers.engines.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_weights(tiny_model_dir: Path) -> Path:
    """The tiny chat model's weights (``tiny_model_dir``), under the name worker tests use."""
    return tiny_model_dir


def fill_disk(disk: Path) -> Path:
    """Fill ``disk`` (a ``small_disk``) to its last byte with one file; return the file."""
    import errno

    filler = disk / "filler"
    with filler.open("wb", buffering=0) as fh:
        for size in (65536, 4096):
            try:
                while True:
                    fh.write(b"\0" * size)
            except OSError as e:
                assert e.errno == errno.ENOSPC
    return filler


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted for this test (storage faults), unmounted after it.

    Mounting needs root (CI runs as root): elsewhere it skips locally and fails under CI.
    """
    import subprocess

    mnt = tmp_path / "disk"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        unavailable(f"a tmpfs mount ({done.stderr.strip()}): needs root")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> object:
    """One ``gridshift demo`` run per session, offline, in a fresh data dir (about 20 s).

    Returns a ``tests/e2e/demo_run.DemoRun`` (data dir, exit code, printed lines).
    """
    from demo_run import DemoRun

    from workers.demo import run_demo

    data = tmp_path_factory.mktemp("demo") / "data"
    lines: list[str] = []
    code = run_demo(Settings(data_dir=data, database_url=""), echo=lines.append)
    return DemoRun(data, code, lines)
