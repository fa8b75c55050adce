"""The forecast cache: SQLite table and its in-memory twin behave alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from scheduler.forecasts import ACTUAL, FORECAST, MemoryForecastCache, SqlForecastCache

T0 = datetime(2026, 11, 22, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "memory"])
def cache(request):
    if request.param == "memory":
        return MemoryForecastCache()
    return SqlForecastCache(request.getfixturevalue("sessions"))


def test_points_round_trip_and_a_refetch_overwrites_them(cache):
    # Given two hourly forecasts stored
    first = {T0: 100.0, T0 + timedelta(hours=1): 110.0}
    assert cache.upsert("uk", "gb|{}", "carbon", FORECAST, first, T0) == 2
    # When a newer fetch revises one of them and adds another
    cache.upsert(
        "uk",
        "gb|{}",
        "carbon",
        FORECAST,
        {T0 + timedelta(hours=1): 90.0, T0 + timedelta(hours=2): 95.0},
        T0 + timedelta(hours=1),
    )
    # Then each time holds one value, the newest, as aware UTC
    got = cache.load("uk", "gb|{}", "carbon", FORECAST, T0, T0 + timedelta(hours=3))
    assert got == {T0: 100.0, T0 + timedelta(hours=1): 90.0, T0 + timedelta(hours=2): 95.0}
    assert all(t.tzinfo is not None for t in got)


def test_kinds_signals_and_keys_are_kept_apart_and_ranges_are_half_open(cache):
    cache.upsert("uk", "a", "carbon", FORECAST, {T0: 1.0}, T0)
    cache.upsert("uk", "a", "carbon", ACTUAL, {T0: 2.0}, T0)
    cache.upsert("uk", "b", "carbon", FORECAST, {T0: 3.0}, T0)
    cache.upsert("uk", "a", "price", FORECAST, {T0: 4.0}, T0)
    assert cache.load("uk", "a", "carbon", ACTUAL, T0, T0 + timedelta(hours=1)) == {T0: 2.0}
    assert cache.load("uk", "b", "carbon", FORECAST, T0, T0 + timedelta(hours=1)) == {T0: 3.0}
    assert cache.load("uk", "a", "carbon", FORECAST, T0 - timedelta(hours=1), T0) == {}


def test_times_with_other_offsets_are_stored_as_utc(cache):
    paris = timezone(timedelta(hours=1))
    cache.upsert("x", "k", "carbon", FORECAST, {datetime(2026, 11, 22, 1, tzinfo=paris): 5.0}, T0)
    assert cache.load("x", "k", "carbon", FORECAST, T0, T0 + timedelta(minutes=1)) == {T0: 5.0}


def test_last_fetched_is_the_newest_forecast_write(cache):
    assert cache.last_fetched("uk", "a", "carbon") is None
    cache.upsert("uk", "a", "carbon", FORECAST, {T0: 1.0}, T0)
    cache.upsert(
        "uk", "a", "carbon", FORECAST, {T0 + timedelta(hours=1): 1.0}, T0 + timedelta(hours=2)
    )
    cache.upsert("uk", "a", "carbon", ACTUAL, {T0: 1.0}, T0 + timedelta(hours=5))
    assert cache.last_fetched("uk", "a", "carbon") == T0 + timedelta(hours=2)


def test_every_forecast_issue_is_kept_while_reads_still_get_the_newest(cache):
    # Given two issues of the same slots, an hour apart
    t1 = T0 + timedelta(hours=1)
    cache.upsert("uk", "a", "carbon", FORECAST, {T0: 100.0, t1: 110.0}, T0 - timedelta(hours=2))
    cache.upsert("uk", "a", "carbon", FORECAST, {T0: 90.0, t1: 95.0}, T0 - timedelta(hours=1))
    # When the cache is read as planning reads it, and as a record of issues
    newest = cache.load("uk", "a", "carbon", FORECAST, T0, T0 + timedelta(hours=2))
    issues = cache.load_issues("uk", "a", "carbon", T0, T0 + timedelta(hours=2))
    # Then planning still sees only the newest values, and both issues are kept
    assert newest == {T0: 90.0, t1: 95.0}
    assert issues == {
        T0 - timedelta(hours=2): {T0: 100.0, t1: 110.0},
        T0 - timedelta(hours=1): {T0: 90.0, t1: 95.0},
    }
    assert cache.load_stamped("uk", "a", "carbon", FORECAST, T0, t1) == {
        T0: (90.0, T0 - timedelta(hours=1))
    }


def test_writing_the_same_issue_again_changes_nothing_and_actuals_are_not_issues(cache):
    # Given one issue written twice (a retried write) and an actual for the same slot
    for _ in range(2):
        cache.upsert("uk", "a", "carbon", FORECAST, {T0: 100.0}, T0 - timedelta(hours=1))
    cache.upsert("uk", "a", "carbon", ACTUAL, {T0: 97.0}, T0 + timedelta(hours=1))
    # Then one issue holds one value
    assert cache.load_issues("uk", "a", "carbon", T0, T0 + timedelta(hours=1)) == {
        T0 - timedelta(hours=1): {T0: 100.0}
    }


def test_issue_rows_are_counted_once_in_the_sqlite_table(sessions):
    from sqlalchemy import func, select

    from scheduler.store.tables import ForecastIssue

    # Given the SQLite cache written with the same issue three times and a newer one once
    cache = SqlForecastCache(sessions)
    for _ in range(3):
        cache.upsert("uk", "a", "carbon", FORECAST, {T0: 1.0, T0 + timedelta(hours=1): 2.0}, T0)
    cache.upsert("uk", "a", "carbon", FORECAST, {T0: 3.0}, T0 + timedelta(minutes=30))
    # Then the table holds exactly the three distinct (time, issue) rows
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(ForecastIssue)) == 3
