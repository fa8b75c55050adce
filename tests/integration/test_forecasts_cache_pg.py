"""The forecast cache upserts and reads back on a real PostgreSQL database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete

from scheduler.forecasts import ACTUAL, FORECAST, SqlForecastCache
from scheduler.store.db import make_engine, session_factory
from scheduler.store.tables import ForecastIssue, ForecastPoint

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 22, tzinfo=UTC)


def test_forecast_points_upsert_on_postgresql(pg_url):
    # Given the cache on a migrated PostgreSQL database
    engine = make_engine(pg_url)
    sessions = session_factory(engine)
    cache = SqlForecastCache(sessions)
    try:
        # When points are stored twice for the same time, plus an actual
        cache.upsert(
            "uk-carbon-intensity",
            "pg|{}",
            "carbon",
            FORECAST,
            {T0: 180.0, T0 + timedelta(minutes=30): 190.0},
            T0,
        )
        cache.upsert(
            "uk-carbon-intensity", "pg|{}", "carbon", FORECAST, {T0: 170.0}, T0 + timedelta(hours=1)
        )
        cache.upsert(
            "uk-carbon-intensity", "pg|{}", "carbon", ACTUAL, {T0: 176.0}, T0 + timedelta(hours=1)
        )
        # Then the newest forecast wins, kinds stay apart, and times come back aware UTC
        got = cache.load(
            "uk-carbon-intensity", "pg|{}", "carbon", FORECAST, T0, T0 + timedelta(hours=1)
        )
        assert got == {T0: 170.0, T0 + timedelta(minutes=30): 190.0}
        assert cache.load(
            "uk-carbon-intensity", "pg|{}", "carbon", ACTUAL, T0, T0 + timedelta(hours=1)
        ) == {T0: 176.0}
    finally:
        with sessions() as session, session.begin():
            session.execute(delete(ForecastPoint).where(ForecastPoint.key == "pg|{}"))
        engine.dispose()


def test_forecast_issues_are_kept_once_each_on_postgresql(pg_url):
    # Given the cache on PostgreSQL, one issue written twice and a newer one
    engine = make_engine(pg_url)
    sessions = session_factory(engine)
    cache = SqlForecastCache(sessions)
    key = "pg-issues|{}"
    try:
        for _ in range(2):
            cache.upsert("csv", key, "carbon", FORECAST, {T0: 180.0}, T0 - timedelta(hours=2))
        cache.upsert("csv", key, "carbon", FORECAST, {T0: 150.0}, T0 - timedelta(hours=1))
        # Then both issues are kept once each, and planning reads the newest
        assert cache.load_issues("csv", key, "carbon", T0, T0 + timedelta(hours=1)) == {
            T0 - timedelta(hours=2): {T0: 180.0},
            T0 - timedelta(hours=1): {T0: 150.0},
        }
        assert cache.load("csv", key, "carbon", FORECAST, T0, T0 + timedelta(hours=1)) == {
            T0: 150.0
        }
    finally:
        with sessions() as session, session.begin():
            session.execute(delete(ForecastPoint).where(ForecastPoint.key == key))
            session.execute(delete(ForecastIssue).where(ForecastIssue.key == key))
        engine.dispose()
