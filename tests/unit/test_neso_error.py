"""The backtest benchmark's real carbon error, resampled from NESO's GB issues."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from benchmarks.backtest_bench import _neso, mape_by_lead, synthetic_vintages
from benchmarks.neso_error import error_at, error_trajectories
from scheduler.domain import SlotSignal


def test_trajectories_are_the_real_issues_error_growing_with_lead(shared_dir: Path) -> None:
    # Given the five real 48 h issues and their measured actuals
    trajectories = error_trajectories(shared_dir)
    # Then each gives a relative error per lead hour, and the far leads miss more than the near
    assert len(trajectories) == 5
    near = [abs(math.exp(e) - 1) for t in trajectories for lead, e in t.items() if lead < 12]
    far = [abs(math.exp(e) - 1) for t in trajectories for lead, e in t.items() if lead >= 36]
    assert 0.10 < sum(near) / len(near) < sum(far) / len(far) < 0.40


def test_each_site_and_day_takes_another_real_issue(shared_dir: Path) -> None:
    trajectories = error_trajectories(shared_dir)
    # Site 0 on day 0 is issue 0, site 1 issue 1, site 0 on day 1 issue 1
    assert error_at(trajectories, 0, 5, 3) == trajectories[0][3]
    assert error_at(trajectories, 1, 5, 3) == trajectories[1][3]
    assert error_at(trajectories, 0, 24, 3) == trajectories[1][3]
    assert error_at(trajectories, 0, 5, 3) != error_at(trajectories, 1, 5, 3)
    # A lead no real issue measured takes the nearest shorter one
    assert error_at(trajectories, 0, 0, 47) == trajectories[0][46]
    with pytest.raises(ValueError, match="no NESO issues"):
        error_at([], 0, 0, 0)


def test_vintages_carry_exactly_the_real_errors(shared_dir: Path) -> None:
    # Given two sites' flat actuals over 30 hourly slots
    t0 = datetime(2022, 6, 1, tzinfo=UTC)
    slots = [t0 + timedelta(hours=h) for h in range(30)]
    actuals = {
        (s, t): SlotSignal(t, s, 200.0, 0.1, 0.0) for s in ("a-site", "b-site") for t in slots
    }
    trajectories = error_trajectories(shared_dir)
    # When the benchmark's vintages take NESO's error
    v = synthetic_vintages(slots, actuals, base=0.03, slope=0.004, seed=0, carbon=_neso(shared_dir))
    # Then every forecast is the actual times a real issue's error at that lead
    for i, issued in enumerate(slots):
        for (site, t), sig in v.issues[issued].items():
            lead = int((t - issued) / timedelta(hours=1))
            n = 0 if site == "a-site" else 1
            expected = 200.0 * math.exp(error_at(trajectories, n, i, lead))
            assert sig.carbon_g_per_kwh == pytest.approx(expected)
    # And the MAPE is the real one's size, not the synthetic 4-16 %
    assert mape_by_lead(v, actuals)[0] > 0.10
