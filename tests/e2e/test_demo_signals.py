"""After ``gridshift demo`` the store holds the signals it planned on, for every sample site."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from scheduler.config import Settings
from scheduler.review.signals import site_signals
from scheduler.samples import load_sample_fleet
from scheduler.store.db import make_engine, session_factory
from scheduler.store.tables import PlanRecord
from workers.demo import run_demo


@pytest.mark.e2e
@pytest.mark.slow
def test_demo_caches_carbon_price_and_renewable_series_for_all_three_sample_sites(
    tmp_path: Path,
) -> None:
    # Given a fresh data directory and no network
    settings = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'x.db'}")
    lines: list[str] = []
    # When the demo runs there offline
    code = run_demo(settings, data_dir=tmp_path / "demo", online=False, echo=lines.append)
    # Then it completed and the review reads cached (not booked) signal curves for every site
    assert code == 0, "\n".join(lines)
    sessions = session_factory(make_engine(f"sqlite:///{tmp_path / 'demo' / 'demo.db'}"))
    sites = [s.name for s in load_sample_fleet().sites]
    with sessions() as s:
        plan = s.scalars(select(PlanRecord)).first()
        assert plan is not None
        series = site_signals(s, sites, plan.horizon_start, plan.horizon_end)
    assert sorted(x.site for x in series) == sorted(sites)
    hours = (plan.horizon_end - plan.horizon_start) / timedelta(hours=1)
    for x in series:
        assert x.source != "booked"
        assert len(x.points) == pytest.approx(hours, abs=1)
        assert all(p.carbon_g_per_kwh is not None and p.carbon_g_per_kwh > 0 for p in x.points)
        assert all(p.price_per_kwh is not None for p in x.points)
        assert all(p.renewable_kw is not None and p.renewable_kw >= 0 for p in x.points)
    # and the sunny sites' renewable curves are not flat zero
    solar = {x.site: max(p.renewable_kw or 0.0 for p in x.points) for x in series}
    assert solar["es-madrid"] > 0
