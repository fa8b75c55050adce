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


def _alembic(url: str, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "alembic", "-x", f"url={url}", *args],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )


def _forecast_issue_schema(url: str) -> tuple[bool, set[str], int]:
    """(forecast_issues exists, the assignments columns, forecast_points rows)."""
    from sqlalchemy import text

    engine = make_engine(url)
    try:
        insp = inspect(engine)
        has = insp.has_table("forecast_issues")
        columns = {c["name"] for c in insp.get_columns("assignments")}
        with engine.connect() as conn:
            points = conn.execute(text("SELECT count(*) FROM forecast_points")).scalar_one()
    finally:
        engine.dispose()
    return has, columns, int(points)


def _upgrade_and_downgrade_0008(url: str) -> None:
    from sqlalchemy import text

    # Given a store at 0007 holding a cached forecast point
    _alembic(url, "upgrade", "0007")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO forecast_points (provider, key, signal, kind, time, value, fetched_at)"
                " VALUES ('csv', 'a|{}', 'carbon', 'forecast', '2026-11-01 00:00:00', 1.0,"
                " '2026-10-31 23:00:00')"
            )
        )
    engine.dispose()
    has, columns, _ = _forecast_issue_schema(url)
    assert not has and "signal_issued_at" not in columns
    # When 0008 is applied, Then the issues table and the assignment column appear
    _alembic(url, "upgrade", "0008")
    has, columns, points = _forecast_issue_schema(url)
    assert has and "signal_issued_at" in columns and points == 1
    # When it is rolled back, Then both are gone and the cached point is untouched
    _alembic(url, "downgrade", "0007")
    has, columns, points = _forecast_issue_schema(url)
    assert not has and "signal_issued_at" not in columns and points == 1
    # And upgrading again gives the models' schema exactly
    _alembic(url, "upgrade", "head")
    _assert_schema_matches_models(url)


def test_0008_forecast_issues_upgrades_and_downgrades_on_sqlite(tmp_path: Path) -> None:
    _upgrade_and_downgrade_0008(f"sqlite:///{tmp_path / 'updown.db'}")


def test_0008_forecast_issues_upgrades_and_downgrades_on_postgresql(fresh_pg_url: str) -> None:
    _upgrade_and_downgrade_0008(fresh_pg_url)
