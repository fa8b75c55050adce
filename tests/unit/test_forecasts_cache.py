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
