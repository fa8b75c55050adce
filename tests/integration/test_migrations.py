"""``alembic upgrade head`` builds SQLite and PostgreSQL from zero, matching the models exactly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from scheduler.store.db import make_engine
from scheduler.store.migrate import alembic_config
from scheduler.store.tables import Base

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO_ROOT = Path(__file__).resolve().parents[2]


def _upgrade_with_the_cli(url: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "alembic", "-x", f"url={url}", "upgrade", "head"],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )


def _assert_schema_matches_models(url: str) -> None:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(ctx, Base.metadata)
            current = ctx.get_current_revision()
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert diff == [], f"migrations and scheduler/store/tables.py differ: {diff}"
    assert current == ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert set(Base.metadata.tables) <= tables


def test_upgrade_head_builds_sqlite_from_zero_identical_to_the_models(tmp_path: Path) -> None:
    # Given an empty SQLite file, When `alembic upgrade head` runs, Then no diff remains
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    _upgrade_with_the_cli(url)
    _assert_schema_matches_models(url)


def test_upgrade_head_builds_postgresql_from_zero_identical_to_the_models(
    fresh_pg_url: str,
) -> None:
    # Given an empty PostgreSQL database, When `alembic upgrade head` runs, Then no diff remains
    _upgrade_with_the_cli(fresh_pg_url)
    _assert_schema_matches_models(fresh_pg_url)
