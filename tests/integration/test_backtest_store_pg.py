"""The store backtest's loader reads the same night from PostgreSQL as from SQLite."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker
from store_night import SINCE, UNTIL, seed_night, write_fleet

from scheduler.backtest import backtest
from scheduler.backtest_store import BacktestInputs, load_store_history
from scheduler.config import Settings
from scheduler.fleet import load_fleet
from scheduler.store.db import make_engine, session_factory
from scheduler.store.migrate import upgrade

pytestmark = pytest.mark.integration
HOLD = timedelta(hours=48)


def _load(sessions: sessionmaker[Session], settings: Settings, fleet_path: Path, tmp: Path):
    fleet = load_fleet(fleet_path)
    seed_night(sessions, settings, fleet, tmp)
    with sessions() as s:
        return load_store_history(s, fleet, SINCE, UNTIL, hold=HOLD)


def _shape(h: BacktestInputs) -> tuple[object, ...]:
    batches = [(b.requests, b.input_tokens, b.submitted_at, b.deadline) for b in h.batches]
    issues = {
        i: {k: (s.carbon_g_per_kwh, s.price_per_kwh, s.issued_at) for k, s in sigs.items()}
        for i, sigs in h.vintages.issues.items()
    }
    actuals = {k: (s.carbon_g_per_kwh, s.price_per_kwh, s.source) for k, s in h.actuals.items()}
    return batches, issues, list(h.actual_slots), actuals


def test_the_night_loads_alike_from_postgresql_and_sqlite_and_replays(
    tmp_path: Path, sessions: sessionmaker[Session], settings: Settings, fresh_pg_url: str
) -> None:
    # Given the same night seeded into a fresh PostgreSQL store and into SQLite
    fleet_path = write_fleet(tmp_path / "conf")
    engine = make_engine(fresh_pg_url)
    try:
        upgrade(engine)
        pg_settings = Settings(data_dir=tmp_path / "pg-data", database_url=fresh_pg_url)
        (tmp_path / "pg").mkdir()
        from_pg = _load(session_factory(engine), pg_settings, fleet_path, tmp_path / "pg")
    finally:
        engine.dispose()
    (tmp_path / "lite").mkdir()
    from_sqlite = _load(sessions, settings, fleet_path, tmp_path / "lite")
    # Then batches, vintages (with issue times) and actuals are the same
    assert _shape(from_pg) == _shape(from_sqlite)
    assert len(from_pg.vintages.issue_times) == 2 and len(from_pg.batches) == 3
    # And the replay on them commits a plan that checks out on the actuals
    result = backtest(*from_pg)
    assert result.validation.ok, result.validation.violations
    assert result.committed.unplaced == ()
