"""Ledger maths and shard cutting: pure functions, hand-checkable numbers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from scheduler.dispatch.shards import shard_sizes
from scheduler.dispatch.tick import order_for_pool
from scheduler.domain import CarbonFactor, MeasurementMethod, Pool, Site, SlotSignal
from scheduler.optimizer.pricing import PricedPiece
from scheduler.store.tables import AssignmentRecord
from workers.energy.base import Measurement
from workers.ledger import (
    compute_ledger_values,
    deviations,
    planned_share,
    renewable_allowance_kwh,
)

T = datetime(2026, 11, 22, 3, tzinfo=UTC)


def _site(**kw: Any) -> Site:
    pool = Pool(name="h100", gpu="H100", count=4, embodied_g_per_gpu_hour=25.0)
    base: dict[str, Any] = dict(
        name="de", pue=1.2, wue_l_per_kwh=0.5, ewif_l_per_kwh=2.0, pools=(pool,)
    )
    base.update(kw)
    return Site(**base)


def _signal(renewable_kw: float = 0.0, wue: float | None = None) -> SlotSignal:
    return SlotSignal(
        time=T,
        site="de",
        carbon_g_per_kwh=300.0,
        price_per_kwh=0.1,
        renewable_kw=renewable_kw,
        wue_l_per_kwh=wue,
    )


def _m(kwh: float, seconds: float) -> Measurement:
    return Measurement(energy_kwh=kwh, duration_s=seconds, method=MeasurementMethod.MEASURED_NVML)


def test_grid_energy_carries_carbon_cost_and_offsite_water_while_it_energy_carries_onsite_water() -> (
    None
):
    # Given 1 kWh of IT energy over half an hour on one GPU, no renewables, no contract factor
    site = _site()
    v = compute_ledger_values(
        _m(1.0, 1800),
        site=site,
        pool=site.pools[0],
        gpus_per_replica=1,
        signal=_signal(),
        carbon_source="actual",
        renewable_allowance_kwh=0.0,
    )
    # Then facility = IT x PUE is all grid, and each figure follows from it
    assert v.facility_energy_kwh == pytest.approx(1.2)
    assert v.grid_kwh == pytest.approx(v.facility_energy_kwh)
    assert v.co2_location_g == pytest.approx(v.grid_kwh * 300.0)
    assert v.cost == pytest.approx(v.grid_kwh * 0.1)
    assert v.water_onsite_l == pytest.approx(1.0 * 0.5)
    assert v.water_offsite_l == pytest.approx(v.grid_kwh * 2.0)
    assert v.embodied_co2_g == pytest.approx(0.5 * 25.0)
    # no instruments nor residual mix: market-based is the location-based figure (fallback)
    assert v.co2_market_g == v.co2_location_g and v.market_basis == "location"
    assert v.renewable_share == 0.0
    assert v.energy_method == "measured-nvml" and v.carbon_source == "actual"
    # and the row is the priced piece itself (one field list), under the ledger's names too
    assert isinstance(v, PricedPiece) and v.it_energy_kwh == v.it_kwh == 1.0
    assert v.co2_g == v.co2_location_g + v.embodied_co2_g


def test_market_based_carbon_uses_the_contract_factor_and_slot_wue_overrides_the_site() -> None:
    site = _site(market_factor_g_per_kwh=35.0)
    v = compute_ledger_values(
        _m(2.0, 3600),
        site=site,
        pool=site.pools[0],
        gpus_per_replica=2,
        signal=_signal(wue=0.1),
        carbon_source="forecast",
        renewable_allowance_kwh=0.0,
    )
    assert v.co2_market_g == pytest.approx(v.grid_kwh * 35.0)
    assert v.co2_market_g is not None and v.co2_market_g < v.co2_location_g
    assert v.water_onsite_l == pytest.approx(2.0 * 0.1)
    assert v.gpu_hours == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("extra", "basis", "market_g_per_kwh"),
    [
        ({}, "location", 300.0),
        ({"market_factor_g_per_kwh": 35.0}, "instruments", 35.0),
        (
            {"market_factor_g_per_kwh": 35.0, "market_share_covered": 0.25},
            "instruments+location",
            0.25 * 35.0 + 0.75 * 300.0,
        ),
        (
            {
                "market_factor_g_per_kwh": 35.0,
                "market_share_covered": 0.25,
                "residual_mix_g_per_kwh": 500.0,
            },
            "instruments+residual",
            0.25 * 35.0 + 0.75 * 500.0,
        ),
        ({"residual_mix_g_per_kwh": 500.0}, "residual", 500.0),
    ],
)
def test_ledger_row_says_what_its_market_based_figure_rests_on(
    extra: dict[str, float], basis: str, market_g_per_kwh: float
) -> None:
    # Given a site partly or wholly covered by contractual instruments, or not at all
    site = _site(**extra)
    v = compute_ledger_values(
        _m(1.0, 1800),
        site=site,
        pool=site.pools[0],
        gpus_per_replica=1,
        signal=_signal(),
        carbon_source="actual",
        renewable_allowance_kwh=0.0,
    )
    # Then the row names its basis, and a partly covered site without a residual mix prices
    # the uncovered rest at the location factor (300 g/kWh)
    assert v.market_basis == basis
    assert v.co2_market_g == pytest.approx(v.grid_kwh * market_g_per_kwh)


def test_renewables_reduce_grid_energy_and_are_never_attributed_beyond_the_slot() -> None:
    # Given 2 kW of solar over a one-hour slot, and 1.5 kWh already booked by earlier attempts
    sig = _signal(renewable_kw=2.0)
    # When a 45-minute attempt asks for its allowance
    allowance = renewable_allowance_kwh(
        sig, duration_s=2700, slot_hours=1.0, already_booked_kwh=1.5
    )
    # Then it gets what is left of the slot (0.5 kWh), not the 1.5 kWh its run length would allow
    assert allowance == pytest.approx(0.5)
    alone = renewable_allowance_kwh(sig, duration_s=2700, slot_hours=1.0, already_booked_kwh=0.0)
    assert alone == pytest.approx(1.5)
    site = _site()
    v = compute_ledger_values(
        _m(1.0, 2700),
        site=site,
        pool=site.pools[0],
        gpus_per_replica=1,
        signal=sig,
        carbon_source="actual",
        renewable_allowance_kwh=alone,
    )
    assert v.renewable_kwh == pytest.approx(1.2) and v.grid_kwh == pytest.approx(0.0)
    assert v.renewable_share == pytest.approx(1.0) and v.co2_location_g == 0.0


def _assignment(requests: int = 100) -> AssignmentRecord:
    return AssignmentRecord(
        site="de",
        pool="h100",
        model="m",
        slot_start=T,
        requests=requests,
        input_tokens=4000.0,
        output_tokens=2000.0,
        gpu_hours=2.0,
        energy_kwh=4.0,
        co2_g=800.0,
        water_l=2.0,
        cost=1.0,
        carbon_g_per_kwh=300.0,
        renewable_kwh=1.2,
        grid_kwh=2.8,
        renewable_kw=1.2,
    )


def test_planned_share_is_pro_rata_of_the_assignment() -> None:
    p = planned_share(_assignment(), 25)
    assert p is not None
    assert (p.energy_kwh, p.co2_g, p.water_l, p.cost) == pytest.approx((1.0, 200.0, 0.5, 0.25))
    assert (p.input_tokens, p.renewable_kwh, p.grid_kwh) == pytest.approx((1000.0, 0.3, 0.7))
    assert planned_share(_assignment(requests=0), 1) is None
    assert planned_share(None, 1) is None


def test_shard_in_its_planned_slot_claims_the_renewables_the_plan_gave_it() -> None:
    # Given a shard planned with 0.3 kWh of the slot's renewables at 1.2 kW
    planned = planned_share(_assignment(), 25)
    # When it runs there and the slot's renewables are as forecast
    same = renewable_allowance_kwh(
        _signal(renewable_kw=1.2),
        duration_s=60,
        slot_hours=1.0,
        already_booked_kwh=0.0,
        planned=planned,
    )
    # Then it claims exactly its planned 0.3 kWh (not 1.2 kW x its one minute)
    assert same == pytest.approx(0.3)
    # And when the sun gave half of the forecast, half of it
    half = renewable_allowance_kwh(
        _signal(renewable_kw=0.6),
        duration_s=60,
        slot_hours=1.0,
        already_booked_kwh=0.0,
        planned=planned,
    )
    assert half == pytest.approx(0.15)
    # And never more than the slot has left after other attempts
    late = renewable_allowance_kwh(
        _signal(renewable_kw=1.2),
        duration_s=60,
        slot_hours=1.0,
        already_booked_kwh=1.1,
        planned=planned,
    )
    assert late == pytest.approx(0.1)
    # And a shard that needed 10 % more energy than planned keeps the planned renewable share
    more = renewable_allowance_kwh(
        _signal(renewable_kw=1.2),
        duration_s=60,
        slot_hours=1.0,
        already_booked_kwh=0.0,
        planned=planned,
        facility_kwh=1.1,
    )
    assert more == pytest.approx(0.33)


def test_marginal_signal_is_booked_as_avoided_emissions_never_as_scope_2() -> None:
    # Given a slot whose carbon signal is a marginal rate of 700 g/kWh, and an average of 300
    marginal = SlotSignal(T, "de", 700.0, 0.1, 0.0, carbon_factor=CarbonFactor.MARGINAL.value)
    # When 1 kWh of IT energy is booked (PUE 1.2: 1.2 kWh of grid)
    v = compute_ledger_values(
        _m(1.0, 1800),
        site=_site(),
        pool=_site().pools[0],
        gpus_per_replica=1,
        signal=marginal,
        carbon_source="forecast",
        renewable_allowance_kwh=0.0,
        average_g_per_kwh=300.0,
    )
    # Then location-based CO2 uses the average factor and the marginal figure stands apart
    assert v.co2_location_g == pytest.approx(1.2 * 300.0)
    assert v.carbon_g_per_kwh == pytest.approx(300.0)
    assert v.co2_marginal_g == pytest.approx(1.2 * 700.0)
    assert v.carbon_factor == "marginal"


def test_deviations_name_what_differs_from_the_plan_and_by_how_much() -> None:
    planned = planned_share(_assignment(), 25)
    assert planned is not None
    v = compute_ledger_values(
        Measurement(1.0 / 1.2, 60, MeasurementMethod.ESTIMATED_PROFILE),
        site=_site(),
        pool=_site().pools[0],
        gpus_per_replica=1,
        signal=SlotSignal(T, "de", 330.0, 0.1, 1.2),
        carbon_source="actual",
        renewable_allowance_kwh=0.3,
        gpu_hours=0.5,
    )
    # When the shard ran in its slot with 10 % more output tokens and a dirtier actual grid
    d = deviations(
        planned,
        site="de",
        slot=T,
        input_tokens=1000,
        output_tokens=550,
        values=v,
        renewable_kw=1.2,
    )
    # Then the ledger says which figures differ and by how much, and nothing else
    assert d is not None
    assert set(d) == {"output_tokens", "carbon_g_per_kwh", "co2_g"}
    assert d["output_tokens"]["delta"] == pytest.approx(50.0)
    assert d["carbon_g_per_kwh"]["delta"] == pytest.approx(30.0)
    # And busy time is compared when the meter timed it: 0.5 GPU-h planned, 1,980 s timed
    timed = deviations(
        planned, site="de", slot=T, input_tokens=1000, output_tokens=550, values=v,
        renewable_kw=1.2, busy_gpu_s=1980.0,
    )  # fmt: skip
    assert timed is not None and timed["busy_gpu_s"]["delta"] == pytest.approx(1980.0 - 1800.0)


@pytest.mark.parametrize(
    ("n", "gpu_h", "max_req", "max_min"),
    [(10, 0.1, 3, 30.0), (2500, 1.0, 1000, 30.0), (7, 10.0, 100, 30.0), (1, 5.0, 10, 1.0)],
)
def test_shards_respect_request_and_gpu_minute_bounds_and_cover_every_request(
    n: int, gpu_h: float, max_req: int, max_min: float
) -> None:
    sizes = shard_sizes(n, gpu_h, max_requests=max_req, max_gpu_minutes=max_min)
    per_req_min = gpu_h * 60 / n
    assert sum(sizes) == n
    assert all(1 <= s <= max_req for s in sizes)
    assert all(s == 1 or s * per_req_min <= max_min + 1e-9 for s in sizes)
    assert max(sizes) - min(sizes) <= 1


def test_pool_runs_its_loaded_model_first_and_swaps_once_per_other_model() -> None:
    # Given due shards alternating between two models, with model B loaded on the pool
    def sh(i: int, model: str) -> Any:
        return SimpleNamespace(
            id=f"s{i}", model=model, slot_start=T + timedelta(hours=i), created_at=T
        )

    shards = [sh(0, "a"), sh(1, "b"), sh(2, "a"), sh(3, "b"), sh(4, "a")]
    # When they are ordered for sending
    order = order_for_pool(shards, loaded_model="b")
    models = [s.model for s in order]
    # Then B's shards go first and there is a single change of model
    assert models == ["b", "b", "a", "a", "a"]
    assert sum(1 for x, y in zip(models, models[1:], strict=False) if x != y) == 1
