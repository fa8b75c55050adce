"""The backtest benchmark's real solar forecasts (Solcast issues, then persistence)."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from benchmarks import scenarios
from benchmarks.scenarios import SITES, _solar_by_city, persistence_hour, solar_forecast


def test_solcasts_next_hour_beats_day_ahead_persistence_on_the_real_trace(
    shared_dir: Path,
) -> None:
    # Given the Nevada site (San Francisco's PV shape, 60 kW peak) over its first 20 days
    kw = solar_forecast(shared_dir, 10)
    _, site, city, shift, _, kwp, _, _ = SITES[3]
    pv = _solar_by_city(shared_dir)[city]
    hours = range(24, 24 * 20)
    actual = {h: kwp * pv[(h - shift) % len(pv)] for h in hours}
    # When forecast for the coming hour (Solcast) and three hours ahead (persistence)
    now = [abs(kw(site, h, h) - actual[h]) for h in hours]
    later = [abs(kw(site, h - 3, h) - actual[h]) for h in hours]
    # Then both are real forecasts with errors, Solcast's the smaller
    assert 0 < statistics.mean(now) < statistics.mean(later)
    # And persistence is exactly yesterday's actual at that hour (known at the issue)
    assert kw(site, 100, 103) == round(kwp * pv[(103 - shift - 24) % len(pv)], 4)


def test_persistence_takes_the_latest_day_whose_hour_had_ended_by_the_issue() -> None:
    # Given an issue at trace hour 100 and every slot of its 48-hour horizon
    for lead in range(48):
        # When persistence picks the past hour for the slot
        past = persistence_hour(100, 100 + lead)
        # Then that hour had ended at the issue, is the slot's hour of day, and is the latest such
        assert past + 1 <= 100
        assert (100 + lead - past) % 24 == 0
        assert past + 24 + 1 > 100
    # And at leads of 24 h or more that is two days back, not the day 24 h earlier
    assert persistence_hour(100, 124) == 76
    assert persistence_hour(100, 147) == 99
    with pytest.raises(ValueError, match="before the issue hour"):
        persistence_hour(100, 99)


def test_solar_forecast_never_reads_actuals_after_its_issue(
    shared_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the real actuals, and a copy in which every hour from the issue on is corrupted
    issued = 24 * 5 + 7
    real = _solar_by_city(shared_dir)
    corrupted = {city: [*pv[:issued], *(9.0 + x for x in pv[issued:])] for city, pv in real.items()}
    honest = solar_forecast(shared_dir, 10)
    monkeypatch.setattr(scenarios, "_solar_by_city", lambda _shared: corrupted)
    blind = solar_forecast(shared_dir, 10)
    # When both forecast every site's 48-hour horizon from that issue
    # (site 0's trace is unshifted, so the issue hour is the trace's own)
    site = SITES[0][1]
    assert SITES[0][3] == 0
    for slot in range(issued + 1, issued + 48):
        # Then the forecasts agree: nothing after the issue was read
        assert blind(site, issued, slot) == honest(site, issued, slot), slot
