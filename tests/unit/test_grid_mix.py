"""The grid's generation mix: fetched and cached like every signal, then split in ESRS E1-5."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from forecast_server import FixtureServer
from sqlalchemy.orm import Session, sessionmaker
from test_forecasts_service import fleet_with
from test_reports import _row

from scheduler.config import Settings
from scheduler.domain import Fleet
from scheduler.forecasts import HttpClient, SqlForecastCache, build_registry, collect_signals
from scheduler.review.grid_mix import grid_mix_split
from scheduler.review.reports import render_report

T0 = datetime(2026, 11, 22, tzinfo=UTC)
NOW = T0 - timedelta(minutes=5)


def _fleet(mix: dict[str, Any] | None) -> Fleet:
    signals: dict[str, Any] = {
        "carbon": {"provider": "constant", "value": 200.0},
        "price": {"provider": "constant", "value": 0.2},
    }
    if mix is not None:
        signals["mix"] = mix
    return fleet_with(signals)


@pytest.fixture
def server() -> Iterator[FixtureServer]:
    with FixtureServer() as s:
        yield s


@pytest.fixture
def registry(tmp_path):
    client = HttpClient(timeout_s=0.5, retries=1, backoff_s=0.01)
    yield build_registry(Settings(data_dir=tmp_path), http=client, base_dir=tmp_path)
    client.close()


def test_uk_mix_is_cached_and_splits_purchased_electricity_by_source(
    server: FixtureServer, registry: Any, sessions: sessionmaker[Session]
) -> None:
    # Given gb-london's mix from the UK API's /generation (recorded answer), collected into
    # the store's cache as the planner does
    server.route("/generation/", fixture="uk_generation_national.json")
    mix = {"provider": "uk-carbon-intensity", "base_url": server.base_url}
    slots = [T0]
    collect_signals(
        _fleet(mix), slots, registry=registry, cache=SqlForecastCache(sessions), now=NOW
    )
    # and two ledger rows: one at gb-london at 00:40 (the 00:30 half-hour's mix), one at a
    # site without a mix
    london, elsewhere = _row(3), _row(4)
    london.site, london.started_at = "gb-london", T0 + timedelta(minutes=40)
    elsewhere.site, elsewhere.started_at = "de-frankfurt", T0 + timedelta(minutes=10)
    rows = [london, elsewhere]
    # When the ESRS summary is rendered with the store's session
    with sessions() as s:
        split = grid_mix_split(s, rows)
        esrs = json.loads(render_report(rows, "esrs", T0, T0 + timedelta(days=1), session=s)[0])
    # Then gb-london's grid energy is split by the 00:30 mix (gas 30.1; nuclear 15.0; wind,
    # biomass, hydro, solar 42.6; imports and other 12.3 unclassified), the other row is unknown
    g = london.grid_kwh
    assert split.fossil_kwh == pytest.approx(g * 0.301)
    assert split.nuclear_kwh == pytest.approx(g * 0.150)
    assert split.renewable_kwh == pytest.approx(g * (6.0 + 1.7 + 34.9) / 100)
    assert split.unclassified_kwh == pytest.approx(g * 0.123)
    assert split.unknown_mix_kwh == pytest.approx(elsewhere.grid_kwh)
    assert (split.rows_with_mix, split.rows_without_mix) == (1, 1)
    e15 = esrs["E1-5"]
    by = e15["by_source"]
    assert by["fossil_purchased_mwh"] == pytest.approx(g * 0.301 / 1000)
    assert by["purchased_mix_unknown_mwh"] == pytest.approx(elsewhere.grid_kwh / 1000)
    assert e15["rows_with_unknown_mix"] == 1
    purchased = sum(v for k, v in by.items() if k != "renewable_self_generated_mwh")
    assert purchased == pytest.approx(e15["purchased_grid_electricity_mwh"])


def test_a_row_long_after_the_last_mix_point_is_of_unknown_mix(
    server: FixtureServer, registry: Any, sessions: sessionmaker[Session]
) -> None:
    server.route("/generation/", fixture="uk_generation_national.json")
    mix = {"provider": "uk-carbon-intensity", "base_url": server.base_url}
    collect_signals(_fleet(mix), [T0], registry=registry, cache=SqlForecastCache(sessions), now=NOW)
    late = _row(2)
    late.site, late.started_at = "gb-london", T0 + timedelta(hours=3)
    with sessions() as s:
        split = grid_mix_split(s, [late])
    assert split.rows_without_mix == 1 and split.fossil_kwh == 0.0


def test_a_failing_mix_source_never_blocks_planning_and_says_so(
    server: FixtureServer, registry: Any, sessions: sessionmaker[Session]
) -> None:
    # Given a mix source that answers 404
    mix = {"provider": "uk-carbon-intensity", "base_url": server.base_url}
    # When signals are collected
    result = collect_signals(
        _fleet(mix), [T0], registry=registry, cache=SqlForecastCache(sessions), now=NOW
    )
    # Then the plan's signals are there and a note says the mix is unknown
    assert result.signals[("gb-london", T0)].carbon_g_per_kwh == 200.0
    assert any("mix" in n and "unknown mix" in n for n in result.notes)


def test_operators_give_the_mix_in_csv_columns(
    tmp_path: Any, registry: Any, sessions: sessionmaker[Session]
) -> None:
    # Given a CSV with the mix columns of planning-formats.md section 2
    path = tmp_path / "mix.csv"
    path.write_text(
        "time,site,fossil_share_pct,nuclear_share_pct,renewable_share_pct\n"
        f"{T0.isoformat()},gb-london,20,30,50\n"
        f"{(T0 + timedelta(hours=1)).isoformat()},gb-london,25,30,45\n",
        encoding="utf-8",
    )
    mix = {"provider": "csv", "path": str(path)}
    collect_signals(_fleet(mix), [T0], registry=registry, cache=SqlForecastCache(sessions), now=NOW)
    row = _row(1)
    row.site, row.started_at = "gb-london", T0 + timedelta(minutes=5)
    with sessions() as s:
        split = grid_mix_split(s, [row])
    assert split.renewable_kwh == pytest.approx(row.grid_kwh * 0.5)
    assert split.fossil_kwh == pytest.approx(row.grid_kwh * 0.2)
    assert split.unclassified_kwh == pytest.approx(0.0, abs=1e-12)
