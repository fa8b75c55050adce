"""Ledger = plan when nothing differs: a shard run as planned books its planned figures exactly."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from execution_helpers import T0, Harness, chat_line, make_harness, run_planned_slots
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import Settings
from scheduler.store.db import transaction
from scheduler.store.summaries import batch_summary
from scheduler.store.tables import BatchPart, LedgerEntry, PlanRecord
from workers.energy import meter_for_pool
from workers.engines.echo import EchoEngine

WORDS = "one two three four five"  # the echo engine counts 5 tokens in and 5 out


@pytest.fixture
def echo_harness(tmp_path: Path, sessions: sessionmaker[Session]) -> Harness:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'gs.db'}",
        max_shard_requests=2,
    )
    h = make_harness(settings, sessions, tmp_path, engine_factory=lambda config: EchoEngine())
    # nothing measurable: every attempt is an estimate (no NVML, no RAPL, whatever the machine)
    h.runtime.meter_factory = lambda site, pool, model: meter_for_pool(pool, model, prefer=())
    return h


def _run_with_estimates(h: Harness, tmp: Path, n: int, tokens_per_request: float) -> list[Any]:
    """Submit ``n`` echo requests whose parts estimate ``tokens_per_request`` in and out each,
    run them in their planned slots, and return the batch's ledger rows."""
    batch_id = h.submit([chat_line(f"r{i}", WORDS) for i in range(n)], tmp=tmp)
    with transaction(h.sessions) as s:
        for part in s.scalars(select(BatchPart).where(BatchPart.batch_id == batch_id)):
            part.input_tokens = tokens_per_request * part.requests
            part.output_tokens = tokens_per_request * part.requests
    assert run_planned_slots(h, batch_id) == "completed"
    with h.sessions() as s:
        return list(s.scalars(select(LedgerEntry).where(LedgerEntry.batch_id == batch_id)))


def test_a_shard_run_as_planned_books_its_planned_figures_exactly(
    echo_harness: Harness, tmp_path: Path
) -> None:
    # Given a batch whose token estimates are exact (5 tokens in, 5 out per request)
    # When it is planned and every shard runs in its planned slot with the planned signals
    rows = _run_with_estimates(echo_harness, tmp_path, 7, 5.0)
    # Then every row books its planned energy, CO2, water and cost to 1e-6, says nothing differs
    assert rows
    # (the first shard after the model load also books the load, a labelled estimate the plan
    # does not price: planned energy + the load's, and only that row)
    loaded = [r for r in rows if r.model_load_kwh is not None]
    assert len(loaded) == echo_harness.runtime.engine_cache.loads
    for r in loaded:
        assert r.model_load_method == "estimated"
        assert r.planned_energy_kwh is not None
        pue = echo_harness.fleet.site(r.site).pue
        assert r.facility_energy_kwh == pytest.approx(
            r.planned_energy_kwh + r.model_load_kwh * pue, rel=1e-6, abs=1e-12
        )
    for r in rows:
        if r.model_load_kwh is not None:
            continue
        assert r.energy_method == "estimated-profile"
        assert r.busy_estimate_kwh is not None  # the second, busy-time estimate is kept
        assert r.planned_energy_kwh is not None and r.planned_co2_g is not None
        assert r.facility_energy_kwh == pytest.approx(r.planned_energy_kwh, rel=1e-6, abs=1e-12)
        assert r.co2_location_g + r.embodied_co2_g == pytest.approx(
            r.planned_co2_g, rel=1e-6, abs=1e-12
        )
        assert r.water_onsite_l + r.water_offsite_l == pytest.approx(
            r.planned_water_l, rel=1e-6, abs=1e-12
        )
        assert r.cost == pytest.approx(r.planned_cost, rel=1e-6, abs=1e-12)
        assert r.grid_kwh == pytest.approx(r.planned_grid_kwh, rel=1e-6, abs=1e-12)
        # nothing differs but the wall time, which no plan controls (the echo engine is
        # instant; the profile says how long the tokens take on the pool)
        assert set(r.deviations) <= {"busy_gpu_s"}
        assert r.signal_fallback is None


def test_a_shard_with_more_tokens_than_planned_books_them_and_says_by_how_much(
    echo_harness: Harness, tmp_path: Path
) -> None:
    # Given a batch whose token estimates are half of what the engine will count
    # When it runs
    rows = _run_with_estimates(echo_harness, tmp_path, 3, 2.5)
    # Then the booked energy is the token model on the actual tokens (twice the plan's), with
    # the same renewable share as planned, so CO2 and water are off by the tokens' error only
    # (the row that books the model load is checked in the test above)
    for r in rows:
        if r.model_load_kwh is not None:
            continue
        assert r.facility_energy_kwh == pytest.approx(2 * r.planned_energy_kwh, rel=1e-6)
        assert r.co2_location_g + r.embodied_co2_g == pytest.approx(2 * r.planned_co2_g, rel=1e-6)
        assert r.water_onsite_l + r.water_offsite_l == pytest.approx(
            2 * r.planned_water_l, rel=1e-6
        )
        d = r.deviations
        assert d["input_tokens"]["delta"] == pytest.approx(2.5 * r.requests_done)
        assert d["energy_kwh"]["actual"] == pytest.approx(r.facility_energy_kwh)


def test_a_finished_batch_keeps_its_planned_figures_after_a_later_replan(
    echo_harness: Harness, tmp_path: Path
) -> None:
    # Given a batch that ran to completion under plan 1
    h = echo_harness
    first = h.submit([chat_line(f"a{i}", WORDS) for i in range(4)], tmp=tmp_path)
    assert run_planned_slots(h, first) == "completed"
    with h.sessions() as s:
        before = batch_summary(s, first)["planned"]
        booked = s.scalar(
            select(func.sum(LedgerEntry.planned_co2_g)).where(LedgerEntry.batch_id == first)
        )
    # When another batch arrives and the service plans again
    h.submit([chat_line(f"b{i}", WORDS) for i in range(3)], tmp=tmp_path)
    h.tick(T0 + timedelta(hours=6))
    with h.sessions() as s:
        current = s.scalar(select(func.max(PlanRecord.id)))
        after = batch_summary(s, first)["planned"]
    # Then the finished batch still shows what was planned for it, beside what was booked
    assert current is not None and current > before["plan_id"]
    assert after["co2_g"] > 0 and after["requests"] == 4
    assert after["co2_g"] == pytest.approx(before["co2_g"]) == pytest.approx(booked)
    assert after["energy_kwh"] == pytest.approx(before["energy_kwh"])
    assert after["plan_ids"] == before["plan_ids"]


def test_a_marginal_site_plans_and_books_one_factor_type(
    echo_harness: Harness, tmp_path: Path
) -> None:
    import dataclasses

    # Given every site steered by marginal rates, with an average factor of 250 g/kWh each
    h = echo_harness
    fleet = dataclasses.replace(
        h.fleet,
        sites=tuple(dataclasses.replace(s, average_carbon_g_per_kwh=250.0) for s in h.fleet.sites),
    )
    # (no on-site solar, so every kWh is from the grid and carbon is at stake)
    signals = {
        k: dataclasses.replace(v, carbon_factor="marginal", renewable_kw=0.0)
        for k, v in h.signals.items()
    }
    h.fleet, h.runtime.fleet, h.signals = fleet, fleet, signals
    h.runtime.signal_lookup = lambda site, slot: (
        (signals[(site, slot)], "synthetic") if (site, slot) in signals else None
    )
    # When a batch is planned on them and runs as planned
    rows = [r for r in _run_with_estimates(h, tmp_path, 4, 5.0) if r.model_load_kwh is None]
    # Then the plan's CO2 and the booking's are both scope 2 at the average factor (not the
    # marginal rate beside the average), and nothing but the wall time differs
    assert rows
    for r in rows:
        assert r.carbon_factor == "marginal" and r.co2_marginal_g is not None
        assert r.grid_kwh > 0 and r.co2_marginal_g != pytest.approx(r.co2_location_g)
        assert r.co2_location_g == pytest.approx(r.grid_kwh * 250.0, rel=1e-9)
        assert r.co2_location_g + r.embodied_co2_g == pytest.approx(r.planned_co2_g, rel=1e-6)
        assert set(r.deviations) <= {"busy_gpu_s"}
