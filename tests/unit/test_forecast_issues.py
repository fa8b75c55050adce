"""Every forecast issue is kept, plans record which one each decision used, old ones expire."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from store_night import SINCE, SITES, source_key, submit, write_fleet

from scheduler.config import Settings
from scheduler.dispatch.replan import replan
from scheduler.dispatch.retention import sweep_retention
from scheduler.fleet import load_fleet
from scheduler.forecasts import FORECAST, SqlForecastCache
from scheduler.review.schedule import current_plan
from scheduler.store.tables import AssignmentRecord, ForecastIssue, ForecastPoint

NOW = SINCE + timedelta(minutes=10)
OLDER, NEWER = NOW - timedelta(hours=3), NOW - timedelta(hours=1)


def _settings(tmp_path: Path, fleet_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'gs.db'}",
        fleet=fleet_path,
        horizon_hours=6,
    )


def _cache_two_issues(sessions: sessionmaker[Session], fleet_path: Path) -> None:
    """Two issues of every site's carbon for the next 8 hours; the newer one is cleaner."""
    fleet = load_fleet(fleet_path)
    cache = SqlForecastCache(sessions)
    for fetched, level in ((OLDER, 400.0), (NEWER, 200.0)):
        for site in SITES:
            values = {SINCE + timedelta(hours=i): level + 10 * i for i in range(8)}
            cache.upsert(*source_key(fleet, site, "carbon"), "carbon", FORECAST, values, fetched)


def _issue_times(sessions: sessionmaker[Session]) -> set[datetime | None]:
    with sessions() as s:
        return set(s.scalars(select(AssignmentRecord.signal_issued_at)))


def test_a_plan_made_while_the_provider_is_down_records_the_newer_cached_issue(
    tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    # Given a carbon source that cannot be read now, two cached issues, and a batch received
    fleet_path = write_fleet(tmp_path / "conf", {"provider": "csv", "path": "missing.csv"})
    settings = _settings(tmp_path, fleet_path)
    fleet = load_fleet(fleet_path)
    _cache_two_issues(sessions, fleet_path)
    submit(sessions, settings, fleet, NOW, 20, tmp_path)
    # When the service re-plans with its own signals (forecasts service over the SQLite cache)
    plan_id = replan(sessions, settings, fleet, NOW, trigger="manual")
    # Then every assignment records the newer issue, and the schedule shows it
    assert plan_id is not None
    assert _issue_times(sessions) == {NEWER}
    with sessions() as s:
        views = current_plan(s).assignments
    assert views and {a.signal_issued_at for a in views} == {NEWER}
    # And the carbon it was priced with is the newer issue's (200 + 10 per hour from 00:00)
    with sessions() as s:
        rows = s.scalars(select(AssignmentRecord)).all()
    assert all(
        r.carbon_g_per_kwh == pytest.approx(200.0 + 10 * (r.slot_start - SINCE).seconds / 3600)
        for r in rows
    )


def test_a_plan_on_a_fresh_fetch_records_the_time_of_that_fetch(
    tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    # Given a readable carbon file besides the fleet, older cached issues, and a batch
    conf = tmp_path / "conf"
    fleet_path = write_fleet(conf, {"provider": "csv", "path": "carbon.csv"})
    (conf / "carbon.csv").write_text(
        "time,site,carbon_g_per_kwh\n"
        + "".join(
            f"{(SINCE + timedelta(hours=i)):%Y-%m-%dT%H:%M:%SZ},{site},{150 + i}\n"
            for i in range(8)
            for site in SITES
        )
    )
    settings = _settings(tmp_path, fleet_path)
    fleet = load_fleet(fleet_path)
    _cache_two_issues(sessions, fleet_path)
    submit(sessions, settings, fleet, NOW, 20, tmp_path)
    # When the service re-plans at NOW
    replan(sessions, settings, fleet, NOW, trigger="manual")
    # Then the assignments record the fetch made for this plan, which is kept as a third issue
    assert _issue_times(sessions) == {NOW}
    with sessions() as s:
        issued = set(s.scalars(select(ForecastIssue.issued_at).distinct()))
    assert issued == {OLDER, NEWER, NOW}


def test_the_retention_sweep_deletes_only_issues_older_than_the_setting(
    tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    # Given issues from 40 days and from 1 day before the sweep, kept for 30 days
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'gs.db'}",
        forecast_issue_retention_days=30,
    )
    sweep_at = datetime(2026, 12, 15, tzinfo=UTC)
    cache = SqlForecastCache(sessions)
    old, recent = sweep_at - timedelta(days=40), sweep_at - timedelta(days=1)
    cache.upsert("csv", "north|{}", "carbon", FORECAST, {old: 300.0}, old)
    cache.upsert("csv", "north|{}", "carbon", FORECAST, {recent: 200.0}, recent)
    # When the sweep runs
    report = sweep_retention(sessions, settings, now_s=sweep_at.timestamp())
    # Then the old issue went, the recent one and every cached point stay
    assert report.forecast_issues_removed == 1
    with sessions() as s:
        assert list(s.scalars(select(ForecastIssue.issued_at))) == [recent]
        assert s.scalar(select(func.count()).select_from(ForecastPoint)) == 2
    # And a second sweep finds nothing more to delete
    assert (
        sweep_retention(sessions, settings, now_s=sweep_at.timestamp()).forecast_issues_removed == 0
    )
