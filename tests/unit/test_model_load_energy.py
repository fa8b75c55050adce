"""Model-load energy: booked once, as its own labelled figure, inside the shard's IT energy."""

from __future__ import annotations

import pytest

from scheduler.domain import EngineSpec, MeasurementMethod, ModelSpec, Profile
from workers.energy.base import Measurement
from workers.energy.estimate import BookedEnergy, booked_energy
from workers.energy.window import model_load_energy
from workers.engine_cache import EngineCache
from workers.engines.echo import EchoEngine

PROFILE = Profile(gpus=2, prefill_tok_s=1000.0, decode_tok_s=100.0, power_w=360.0)


def _booked(
    method: MeasurementMethod, kwh: float = 0.01, duration_s: float = 100.0
) -> tuple[Measurement, BookedEnergy]:
    window = Measurement(energy_kwh=kwh, duration_s=duration_s, method=method)
    return window, booked_energy(window, PROFILE, input_tokens=1000, output_tokens=500)


def test_a_load_inside_a_measured_window_is_its_share_of_the_measurement() -> None:
    window, booked = _booked(MeasurementMethod.MEASURED_NVML)
    after, load = model_load_energy(booked, window, load_s=25.0, in_window=True, profile=PROFILE)
    # a quarter of the window's wall time: a quarter of its measured energy, not added again
    assert load.kwh == pytest.approx(0.0025) and load.method == "measured-nvml"
    assert not load.added and after.measurement.energy_kwh == pytest.approx(0.01)


def test_an_estimated_shard_gets_the_load_added_as_a_labelled_estimate() -> None:
    window, booked = _booked(MeasurementMethod.ESTIMATED)
    assert booked.measurement.method == MeasurementMethod.ESTIMATED_PROFILE  # token model
    before = booked.measurement.energy_kwh
    after, load = model_load_energy(booked, window, load_s=30.0, in_window=True, profile=PROFILE)
    # the token model leaves the load out: GPUs x power x load time is added, labelled
    assert load.kwh == pytest.approx(2 * 360.0 * 30.0 / 3.6e6) and load.method == "estimated"
    assert load.added
    assert after.measurement.energy_kwh == pytest.approx(before + load.kwh)
    assert "model load" in after.measurement.detail


def test_a_busy_time_estimate_of_the_window_already_holds_the_load() -> None:
    window = Measurement(energy_kwh=0.02, duration_s=100.0, method=MeasurementMethod.ESTIMATED)
    booked = BookedEnergy(window, gpu_hours=0.05)  # no profile usable: busy estimate booked
    after, load = model_load_energy(booked, window, load_s=10.0, in_window=True, profile=PROFILE)
    assert not load.added and after.measurement.energy_kwh == pytest.approx(0.02)
    assert load.method == "estimated" and load.kwh > 0


def test_a_load_before_the_window_is_added_even_to_a_measured_shard() -> None:
    # run-batch loads while the file is validated, before the shard's meter window opens
    window, booked = _booked(MeasurementMethod.MEASURED_RAPL)
    after, load = model_load_energy(booked, window, load_s=20.0, in_window=False, profile=PROFILE)
    assert load.method == "estimated" and load.added
    assert after.measurement.energy_kwh == pytest.approx(0.01 + load.kwh)
    # and the row says it has an estimated part: it is not wholly measured any more
    assert after.measurement.method == "measured-rapl+estimated-load"
    assert after.measurement.estimated


def test_esrs_counts_only_the_estimated_load_of_a_partly_measured_row_as_estimated() -> None:
    from datetime import UTC, datetime

    from scheduler.review.reports import emissions_totals
    from scheduler.store.tables import LedgerEntry

    # Given a row of 0.5 kWh IT (PUE 1.2): 0.3 kWh measured by RAPL plus a 0.2 kWh load estimate
    t = datetime(2026, 11, 22, tzinfo=UTC)
    row = LedgerEntry(
        batch_id="b", shard_id="s", attempt=1, tenant_id="t", site="x", pool="cpu", model="m",
        started_at=t, ended_at=t, requests_done=1, requests_failed=0, input_tokens=1,
        output_tokens=1, gpu_hours=0.1, it_energy_kwh=0.5, facility_energy_kwh=0.6,
        energy_method="measured-rapl+estimated-load", renewable_share=0.0, grid_kwh=0.6,
        carbon_g_per_kwh=100.0, carbon_source="actual", co2_location_g=60.0, co2_market_g=60.0,
        embodied_co2_g=0.0, water_onsite_l=0.0, water_offsite_l=0.0, cost=0.0,
        model_load_kwh=0.2, model_load_method="estimated", created_at=t,
    )  # fmt: skip
    # When totalled, Then the row counts as estimated and only the load's share is estimated
    totals = emissions_totals([row])
    assert totals.estimated_rows == 1 and totals.measured_rows == 0
    assert totals.estimated_facility_energy_kwh == pytest.approx(0.6 * 0.2 / 0.5)


def test_the_cache_hands_each_load_out_once_and_only_for_the_model_loaded() -> None:
    cache = EngineCache(lambda config: EchoEngine(), weights_override={"a": "-", "b": "-"})
    spec = EngineSpec(kind="echo")
    cache.get(spec, ModelSpec(name="a", quality=0.5, profiles={}))
    assert cache.take_load("b") is None  # another model: not its load (and it is consumed)
    cache.get(spec, ModelSpec(name="b", quality=0.5, profiles={}))
    load = cache.take_load("b")
    assert load is not None and load.model == "b" and load.seconds >= 0
    assert cache.take_load("b") is None and cache.loads == 2
    cache.get(
        spec, ModelSpec(name="b", quality=0.5, profiles={})
    )  # already loaded: nothing to book
    assert cache.take_load("b") is None and cache.loads == 2
