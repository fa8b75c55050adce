"""The backtest benchmark's real solar forecasts (Solcast issues, then persistence)."""

from __future__ import annotations

import statistics
from pathlib import Path

from benchmarks.scenarios import SITES, _solar_by_city, solar_forecast


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
