"""The README's service path on a fresh data dir: a batch completes, booked = plan's pricing."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from scheduler.optimizer.pricing import energy_from_tokens
from scheduler.samples import load_sample_fleet
from scheduler.store.db import make_engine, session_factory
from scheduler.store.tables import LedgerEntry

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "service_path.py"


def test_readme_service_path_completes_a_batch_and_books_the_plans_pricing(
    tmp_path: Path, pinned_now: datetime
) -> None:
    # Given a fresh data dir and the README's steps with the sample fleet (serve, dispatch,
    # one worker per pool; the tiny models build themselves), run by the benchmark script, all
    # on the pinned clock (mid-hour: the batch is due at the end of the slot in progress)
    data = tmp_path / "data"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--json", "--requests", "6", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    # Then the batch completed within a minute of its submission
    assert out["status"] == "completed"
    assert out["took_s"] < 60
    # And every row booked the planner's token model on the tokens the engine counted
    fleet = load_sample_fleet()
    engine = make_engine(f"sqlite:///{data / 'gridshift.db'}")
    with session_factory(engine)() as s:
        rows = list(s.scalars(select(LedgerEntry)))
    engine.dispose()
    assert rows and all(r.energy_method == "estimated-profile" for r in rows)
    for r in rows:
        site = fleet.site(r.site)
        profile = fleet.model(r.model).profiles[site.pool(r.pool).gpu]
        expected = energy_from_tokens(profile, site.pue, r.input_tokens, r.output_tokens)
        # (the first row after a model load also books that load, labelled, on top)
        load_facility_kwh = (r.model_load_kwh or 0.0) * site.pue
        assert (r.model_load_kwh or 0.0) == 0.0 or r.model_load_method == "estimated"
        assert r.facility_energy_kwh == pytest.approx(
            expected.facility_kwh + load_facility_kwh, rel=1e-9
        )
        assert r.signal_fallback is None
    # And booked sits within the token estimate's error of planned: each row's energy is the
    # token model's (checked above) plus, on a worker's first shard, its model load (labelled);
    # water follows the booked energy by the planned factor
    for r in rows:
        assert r.planned_energy_kwh and r.planned_water_l
        ratio = r.facility_energy_kwh / r.planned_energy_kwh
        water = r.water_onsite_l + r.water_offsite_l
        assert water / r.planned_water_l == pytest.approx(ratio, rel=1e-6)
    # and the batch's totals hold at least what was planned, the loads on top
    planned, actual = out["planned"], out["actual"]
    loads = sum((r.model_load_kwh or 0.0) * fleet.site(r.site).pue for r in rows)
    assert actual["energy_kwh"] - loads >= planned["energy_kwh"]
    assert actual["energy_kwh"] == pytest.approx(sum(r.facility_energy_kwh for r in rows))
