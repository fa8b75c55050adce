"""collect_signals: providers, cache, labelled fallbacks, clear errors; forecast vs actual."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from forecast_server import FIXTURES, FixtureServer

from scheduler.config import Settings
from scheduler.domain import Fleet, SignalSource
from scheduler.errors import ForecastUnavailable
from scheduler.fleet import parse_fleet
from scheduler.forecasts import (
    ACTUAL,
    FORECAST,
    HttpClient,
    MemoryForecastCache,
    SqlForecastCache,
    build_registry,
    cache_key,
    collect_signals,
    forecast_vs_actual,
)

T0 = datetime(2026, 11, 22, tzinfo=UTC)
NOW = T0 - timedelta(minutes=5)


def hours(n: int) -> list[datetime]:
    return [T0 + timedelta(hours=i) for i in range(n)]


def fleet_with(signals: dict[str, Any], *, name: str = "gb-london") -> Fleet:
    return parse_fleet(
        {
            "slot_minutes": 60,
            "sites": [
                {
                    "name": name,
                    "pue": 1.2,
                    "signals": signals,
                    "pools": [{"name": "cpu", "gpu": "CPU", "count": 1}],
                }
            ],
            "models": [
                {
                    "name": "m",
                    "profiles": {"CPU": {"prefill_tok_s": 1, "decode_tok_s": 1, "power_w": 1}},
                }
            ],
        }
    )


@pytest.fixture
def server() -> Iterator[FixtureServer]:
    with FixtureServer() as s:
        yield s


@pytest.fixture
def registry(tmp_path):
    client = HttpClient(timeout_s=0.3, retries=1, backoff_s=0.01)
    yield build_registry(Settings(data_dir=tmp_path), http=client, base_dir=FIXTURES)
    client.close()


def test_uk_half_hours_become_hourly_slots_and_actuals_are_recorded(server, registry):
    # Given gb-london on the national UK API (local recording) and a constant tariff
    server.route("/intensity/", fixture="uk_national_fw48h.json")
    fleet = fleet_with(
        {
            "carbon": {"provider": "uk-carbon-intensity", "base_url": server.base_url},
            "price": {"provider": "constant", "value": 0.2},
        }
    )
    cache = MemoryForecastCache()
    # When signals are collected for four hourly slots
    result = collect_signals(fleet, hours(4), registry=registry, cache=cache, now=NOW)
    # Then each slot averages its two half-hours, nothing is a fallback, solar defaults to 0
    first = result.signals[("gb-london", T0)]
    assert first.carbon_g_per_kwh == pytest.approx(185.0)
    assert result.signals[("gb-london", T0 + timedelta(hours=3))].carbon_g_per_kwh == pytest.approx(
        140.0
    )
    assert first.price_per_kwh == 0.2 and first.renewable_kw == 0.0
    assert first.source == "carbon=uk-carbon-intensity;price=constant"
    assert not result.fallback and not first.fallback
    assert result.sources[("gb-london", "carbon")] == "uk-carbon-intensity"
    # and the API's actuals are in the cache for the forecast-vs-actual view
    key = cache_key("gb-london", {"base_url": "ignored"})
    assert cache.load(
        "uk-carbon-intensity", key, "carbon", ACTUAL, T0, T0 + timedelta(hours=4)
    ) == {
        T0: 176.0,
        T0 + timedelta(minutes=30): 194.0,
    }


def test_a_timed_out_provider_falls_back_to_yesterdays_same_hour_and_says_so(server, registry):
    # Given a stalled UK API and yesterday's values in the cache
    server.route("/intensity/", fixture="uk_national_fw48h.json", delay_s=1.0)
    fleet = fleet_with(
        {
            "carbon": {"provider": "uk-carbon-intensity", "base_url": server.base_url},
            "price": {"provider": "constant", "value": 0.2},
        }
    )
    cache = MemoryForecastCache()
    yesterday = {T0 - timedelta(days=1) + timedelta(hours=i): 300.0 + i for i in range(3)}
    cache.upsert(
        "uk-carbon-intensity",
        cache_key("gb-london", {}),
        "carbon",
        FORECAST,
        yesterday,
        NOW - timedelta(days=1),
    )
    # When signals are collected
    result = collect_signals(fleet, hours(3), registry=registry, cache=cache, now=NOW)
    # Then each slot repeats yesterday's same hour, marked as a fallback, with a note why
    values = [result.signals[("gb-london", t)].carbon_g_per_kwh for t in hours(3)]
    assert values == [300.0, 301.0, 302.0]
    assert result.fallback
    assert all(result.signals[("gb-london", t)].fallback for t in hours(3))
    assert "carbon=persistence:uk-carbon-intensity" in result.signals[("gb-london", T0)].source
    assert any("gb-london carbon" in n and "persistence" in n for n in result.notes)


def test_a_stale_forecast_for_the_same_slot_beats_persistence(server, registry):
    # Given a failing API, and both an earlier forecast for the slot and yesterday's value cached
    server.route("/intensity/", body={}, status=500)
    fleet = fleet_with(
        {
            "carbon": {"provider": "uk-carbon-intensity", "base_url": server.base_url},
            "price": {"provider": "constant", "value": 0.1},
        }
    )
    cache = MemoryForecastCache()
    key = cache_key("gb-london", {})
    cache.upsert(
        "uk-carbon-intensity",
        key,
        "carbon",
        FORECAST,
        {T0: 222.0, T0 - timedelta(days=1): 111.0},
        NOW,
    )
    # When collected for one slot
    result = collect_signals(fleet, hours(1), registry=registry, cache=cache, now=NOW)
    # Then the earlier forecast for that very slot is used
    assert result.signals[("gb-london", T0)].carbon_g_per_kwh == 222.0
    assert "cache:uk-carbon-intensity" in result.signals[("gb-london", T0)].source


def test_a_missing_key_falls_back_to_the_configured_synthetic_source(registry):
    # Given Electricity Maps without a token, with `fallback: synthetic`
    fleet = fleet_with(
        {
            "carbon": {"provider": "electricitymaps", "zone": "DE", "fallback": "synthetic"},
            "price": {"provider": "synthetic"},
        },
        name="de-frankfurt",
    )
    # When collected
    result = collect_signals(
        fleet, hours(6), registry=registry, cache=MemoryForecastCache(), now=NOW
    )
    # Then the values are synthetic, labelled so, and the note names the missing setting
    signal = result.signals[("de-frankfurt", T0)]
    assert signal.fallback and result.fallback
    assert "carbon=fallback:synthetic" in signal.source
    assert signal.carbon_g_per_kwh > 0
    assert any("GRIDSHIFT_ELECTRICITYMAPS_TOKEN" in n for n in result.notes)


def test_no_provider_and_no_cache_raises_naming_the_site_signal_and_fix(registry):
    fleet = fleet_with(
        {
            "carbon": {"provider": "electricitymaps", "zone": "DE"},
            "price": {"provider": "constant", "value": 0.1},
        }
    )
    with pytest.raises(ForecastUnavailable) as err:
        collect_signals(fleet, hours(2), registry=registry, cache=MemoryForecastCache(), now=NOW)
    message = str(err.value)
    assert "gb-london" in message and "carbon" in message
    assert "GRIDSHIFT_ELECTRICITYMAPS_TOKEN" in message and "fallback: synthetic" in message


def test_a_site_without_a_carbon_source_is_refused_unless_defaults_give_one(registry, tmp_path):
    # Given a site with no signals and a forecasts.csv covering it
    fleet = fleet_with({})
    path = tmp_path / "forecasts.csv"
    path.write_text(
        "time,site,carbon_g_per_kwh,price_per_kwh,renewable_kw\n"
        "2026-11-22T00:00:00Z,gb-london,200,0.2,1.5\n"
        "2026-11-22T01:00:00Z,gb-london,150,-0.1,0\n"
    )
    defaults = {k: SignalSource("csv", {"path": str(path)}) for k in ("carbon", "price", "solar")}
    # Then without defaults it is refused with a hint, and with them every column is read
    with pytest.raises(ForecastUnavailable, match="no carbon source"):
        collect_signals(fleet, hours(2), registry=registry, now=NOW)
    result = collect_signals(fleet, hours(2), registry=registry, now=NOW, defaults=defaults)
    second = result.signals[("gb-london", T0 + timedelta(hours=1))]
    assert (second.carbon_g_per_kwh, second.price_per_kwh, second.renewable_kw) == (
        150.0,
        -0.1,
        0.0,
    )
    assert result.signals[("gb-london", T0)].renewable_kw == 1.5


def test_a_forecast_shorter_than_the_horizon_is_extended_by_a_labelled_fallback(server, registry):
    # Given a UK answer covering 4 hours and a 6-hour horizon, with a synthetic fallback
    server.route("/intensity/", fixture="uk_national_fw48h.json")
    fleet = fleet_with(
        {
            "carbon": {
                "provider": "uk-carbon-intensity",
                "base_url": server.base_url,
                "fallback": "synthetic",
            },
            "price": {"provider": "constant", "value": 0.2},
        }
    )
    result = collect_signals(
        fleet, hours(6), registry=registry, cache=MemoryForecastCache(), now=NOW
    )
    # Then the first four slots are first-hand and the last two are marked fallbacks
    flags = [result.signals[("gb-london", t)].fallback for t in hours(6)]
    assert flags == [False] * 4 + [True] * 2


def test_collected_forecasts_and_actuals_round_trip_through_sqlite(server, registry, sessions):
    # Given signals collected into the SQLite cache
    server.route("/intensity/", fixture="uk_national_fw48h.json")
    fleet = fleet_with(
        {
            "carbon": {"provider": "uk-carbon-intensity", "base_url": server.base_url},
            "price": {"provider": "constant", "value": 0.2},
        }
    )
    collect_signals(fleet, hours(2), registry=registry, cache=SqlForecastCache(sessions), now=NOW)
    # When the dashboard asks for forecast vs actual
    with sessions() as session:
        points = forecast_vs_actual(session, fleet.sites[0], T0, T0 + timedelta(hours=4))
    # Then every half-hour has its forecast, and the first two their actuals
    assert len(points) == 8
    assert (points[0].forecast, points[0].actual) == (180.0, 176.0)
    assert points[2].actual is None and points[2].forecast == 170.0
    assert points[0].provider == "uk-carbon-intensity"


def test_a_recent_fetch_is_reused_without_a_request_when_asked(server, registry):
    # Given one collection that filled the cache
    server.route("/intensity/", fixture="uk_national_fw48h.json")
    fleet = fleet_with(
        {
            "carbon": {"provider": "uk-carbon-intensity", "base_url": server.base_url},
            "price": {"provider": "constant", "value": 0.2},
        }
    )
    cache = MemoryForecastCache()
    first = collect_signals(fleet, hours(3), registry=registry, cache=cache, now=NOW)
    requests_before = len(server.seen)
    # When collecting again 10 minutes later with reuse_within=30 min, then 2 hours later
    again = collect_signals(
        fleet,
        hours(3),
        registry=registry,
        cache=cache,
        now=NOW + timedelta(minutes=10),
        reuse_within=timedelta(minutes=30),
    )
    assert len(server.seen) == requests_before
    collect_signals(
        fleet,
        hours(3),
        registry=registry,
        cache=cache,
        now=NOW + timedelta(hours=2),
        reuse_within=timedelta(minutes=30),
    )
    # Then the reuse asked nothing and gave the same first-hand values; the stale one re-fetched
    assert again.signals == first.signals
    assert not again.fallback
    assert len(server.seen) > requests_before


def test_each_signal_carries_the_issue_time_of_the_forecast_it_came_from(registry, tmp_path):
    # Given a carbon file that can be read, and a constant tariff
    path = tmp_path / "carbon.csv"
    path.write_text(
        "time,site,carbon_g_per_kwh\n2026-11-22T00:00:00Z,gb-london,200\n"
        "2026-11-22T01:00:00Z,gb-london,150\n"
    )
    fleet = fleet_with(
        {
            "carbon": {"provider": "csv", "path": str(path)},
            "price": {"provider": "constant", "value": 0.2},
        }
    )
    cache = MemoryForecastCache()
    # When collected at NOW, then again 10 minutes later reusing what was fetched
    fresh = collect_signals(fleet, hours(2), registry=registry, cache=cache, now=NOW)
    reused = collect_signals(
        fleet,
        hours(2),
        registry=registry,
        cache=cache,
        now=NOW + timedelta(minutes=10),
        reuse_within=timedelta(minutes=30),
    )
    # Then a fresh fetch is issued now, and the reused values keep the fetch they came from
    assert {s.issued_at for s in fresh.signals.values()} == {NOW}
    assert {s.issued_at for s in reused.signals.values()} == {NOW}


def test_a_stale_forecast_keeps_its_newer_issue_time_and_persistence_has_none(registry, tmp_path):
    # Given an unreadable carbon file; two earlier issues cached for T0, only yesterday for T0+1h
    fleet = fleet_with(
        {
            "carbon": {"provider": "csv", "path": str(tmp_path / "missing.csv")},
            "price": {"provider": "constant", "value": 0.2},
        }
    )
    cache = MemoryForecastCache()
    key = cache_key("gb-london", {"path": str(tmp_path / "missing.csv")})
    older, newer = NOW - timedelta(hours=3), NOW - timedelta(hours=1)
    yesterday = {T0 - timedelta(days=1) + timedelta(hours=i): 111.0 + i for i in range(3)}
    cache.upsert("csv", key, "carbon", FORECAST, {T0: 300.0, **yesterday}, older)
    cache.upsert("csv", key, "carbon", FORECAST, {T0: 250.0}, newer)
    # When collected
    result = collect_signals(fleet, hours(2), registry=registry, cache=cache, now=NOW)
    # Then T0 uses the newer issue and says so; the persisted slot has no issue of its own
    first, second = (result.signals[("gb-london", t)] for t in hours(2))
    assert (first.carbon_g_per_kwh, first.issued_at) == (250.0, newer)
    assert second.carbon_g_per_kwh == 112.0
    assert "persistence" in second.source and second.issued_at is None


def test_a_failed_marginal_source_filled_by_synthetic_says_so_and_is_an_average(registry):
    # Given a WattTime (marginal) source that cannot answer (no credentials), with a synthetic
    # fallback
    fleet = fleet_with(
        {
            "carbon": {"provider": "watttime", "region": "CAISO_NORTH", "fallback": "synthetic"},
            "price": {"provider": "constant", "value": 0.1},
        },
        name="us-west",
    )
    # When collected
    result = collect_signals(
        fleet, hours(2), registry=registry, cache=MemoryForecastCache(), now=NOW
    )
    # Then every slot names the provider that supplied it, says it is synthetic and why, and
    # carries the fallback's factor type (an average), not the configured marginal one
    signal = result.signals[("us-west", T0)]
    assert signal.carbon_provider == "synthetic" and signal.synthetic
    assert signal.fallback_reason is not None
    assert signal.fallback_reason.startswith("fallback-provider:")
    assert "watttime" in signal.fallback_reason.lower()
    assert signal.carbon_factor == "average-direct"


def test_a_first_hand_signal_names_its_provider_and_no_fallback(server, registry):
    # Given a UK API that answers
    server.route("/intensity/", fixture="uk_national_fw48h.json")
    fleet = fleet_with(
        {
            "carbon": {"provider": "uk-carbon-intensity", "base_url": server.base_url},
            "price": {"provider": "constant", "value": 0.2},
        }
    )
    # When collected
    result = collect_signals(
        fleet, hours(2), registry=registry, cache=MemoryForecastCache(), now=NOW
    )
    # Then a first-hand signal names its provider and no fallback
    signal = result.signals[("gb-london", T0)]
    assert signal.carbon_provider == "uk-carbon-intensity"
    assert not signal.synthetic and signal.fallback_reason is None
