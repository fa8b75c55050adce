"""The one pricing rule: hand-checked pieces, and pieces that add up to the plan's totals."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from optimizer_helpers import HOUR, SMALL, T0, batch, fleet, problem, site
from test_optimizer_property import problems

from scheduler.domain import Assignment
from scheduler.optimizer import plan_problem
from scheduler.optimizer.attribution import price_by_batch, sum_figures
from scheduler.optimizer.pricing import price_problem, share_renewables, sum_pieces
from scheduler.optimizer.problem import FixedLoad, PlanningProblem
from scheduler.optimizer.validate import price

TOTAL_KEYS = ("co2_g", "cost", "water_l", "energy_kwh", "grid_kwh")


def _piece(batch_id: str, gpu_hours: float, slot_h: int = 0) -> Assignment:
    return Assignment(
        batch=batch_id,
        site="a",
        pool="p",
        model="small",
        slot=T0 + slot_h * HOUR,
        requests=1,
        input_tokens=gpu_hours * 3600.0,
        output_tokens=0.0,
        gpu_hours=gpu_hours,
        energy_kwh=gpu_hours,
    )


def test_new_work_beside_running_work_gets_the_grid_energy_it_causes() -> None:
    # Given 1 kWh of renewables in the slot, 1 kWh already running there and 1 kWh of new work
    p = problem(
        fleet([site("a", gpus=4)]),
        {"a": [100.0]},
        [batch("b", gpu_hours=1.0, requests=1)],
        renewable_kw={"a": [1.0]},
        fixed=(FixedLoad(site="a", pool="p", slot=T0, gpu_hours=1.0, facility_kwh=1.0),),
    )
    # When the new piece is priced for its assignment record and for the plan totals
    (piece,) = price_problem(p, [_piece("b", 1.0)])
    totals = price(p, [_piece("b", 1.0)]).totals
    # Then both book the 1 kWh of grid it causes (the running work took the renewables)
    assert piece.grid_kwh == pytest.approx(1.0)
    assert piece.co2_location_g == pytest.approx(100.0)
    assert totals.grid_kwh == pytest.approx(piece.grid_kwh)
    assert totals.operational_co2_g == pytest.approx(piece.co2_location_g)


def test_pieces_of_one_slot_share_renewables_in_proportion_to_facility_energy() -> None:
    # Given 1 kWh of renewables left for pieces of 1 kWh and 3 kWh
    # Then they get 0.25 and 0.75 kWh of it, whatever their order
    assert share_renewables([1.0, 3.0], 1.0) == pytest.approx([0.25, 0.75])
    assert share_renewables([3.0, 1.0], 1.0) == pytest.approx([0.75, 0.25])
    # And renewables beyond the pieces' energy are not booked
    assert sum(share_renewables([1.0, 3.0], 10.0)) == pytest.approx(4.0)


def test_slot_wue_prices_on_site_water() -> None:
    # Given a slot whose forecast carries its own WUE of 2 L/kWh (the site's default is 0)
    p = problem(fleet([site("a", ewif_l_per_kwh=1.0)]), {"a": [100.0]}, [batch("b")])
    sig = p.signals[("a", T0)]
    signals = dict(p.signals)
    signals[("a", T0)] = type(sig)(
        sig.time, sig.site, sig.carbon_g_per_kwh, sig.price_per_kwh, 0.0, wue_l_per_kwh=2.0
    )
    # When a 1 kWh piece is priced
    (piece,) = price_problem(dataclasses.replace(p, signals=signals), [_piece("b", 1.0)])
    # Then on-site water is IT energy x the slot's WUE, off-site is grid x EWIF
    assert piece.water_onsite_l == pytest.approx(2.0)
    assert piece.water_offsite_l == pytest.approx(1.0)


@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(p=problems(), fixed_kwh=st.sampled_from([0.0, 0.4, 3.0]))
def test_pieces_priced_one_by_one_sum_to_the_plan_totals(
    p: PlanningProblem, fixed_kwh: float
) -> None:
    # Given a random small problem, some of it with work already running in the first slot
    if fixed_kwh:
        first = p.slots[0]
        pool = p.fleet.sites[0].pools[0]
        load = FixedLoad(p.fleet.sites[0].name, pool.name, first, 0.0, fixed_kwh)
        p = dataclasses.replace(p, fixed=(load,))
    plan = plan_problem(p, baselines=False)
    # When every assignment is priced on its own record, and per batch
    pieces = price_problem(p, plan.assignments)
    total = sum_pieces(pieces)
    per_batch = sum_figures(price_by_batch(p, plan.assignments).values())
    # Then they add up to the independent re-pricing, which equals the plan's own totals (both
    # priced by scheduler.pricing: no tolerance)
    repriced = price(p, plan.assignments).totals
    for got, want in (
        (total.co2_g, repriced.co2_g),
        (total.cost, repriced.cost),
        (total.water_l, repriced.water_l),
        (total.facility_kwh, repriced.energy_kwh),
        (total.grid_kwh, repriced.grid_kwh),
        (per_batch.co2_g, repriced.co2_g),
        (per_batch.cost, repriced.cost),
        (per_batch.water_l, repriced.water_l),
    ):
        assert got == pytest.approx(want, rel=1e-9, abs=1e-9)
    for key in TOTAL_KEYS:
        assert getattr(repriced, key) == getattr(plan.totals, key), key


def test_fleet_without_the_model_prices_nothing() -> None:
    # Given an assignment naming a model the fleet does not have
    p = problem(fleet([site("a")], models=[SMALL]), {"a": [100.0]}, [batch("b")])
    bad = Assignment("b", "a", "p", "nope", T0, 1, 3600.0, 0.0, 1.0, 1.0)
    # Then it is priced as zero (the validator reports it), never as a made-up figure
    (piece,) = price_problem(p, [bad])
    assert piece.facility_kwh == 0.0 and piece.co2_g == 0.0


@pytest.mark.parametrize(
    ("extra", "market_g"),
    [
        # nothing contracted: the location-based figure, the documented fallback (one rule)
        ({}, 100.0),
        ({"market_factor_g_per_kwh": 20.0}, 20.0),  # instruments cover everything
        # 60 % covered at 20 g, the rest at the residual mix of 500 g
        (
            {
                "market_factor_g_per_kwh": 20.0,
                "market_share_covered": 0.6,
                "residual_mix_g_per_kwh": 500.0,
            },
            0.6 * 20.0 + 0.4 * 500.0,
        ),
        # 60 % covered, no residual mix: the rest at the location-based 100 g
        ({"market_factor_g_per_kwh": 20.0, "market_share_covered": 0.6}, 0.6 * 20 + 0.4 * 100),
        ({"residual_mix_g_per_kwh": 500.0}, 500.0),  # no instruments: residual mix only
    ],
)
def test_market_based_co2_follows_instruments_then_residual_mix_then_location(
    extra: dict[str, float], market_g: float
) -> None:
    # Given 1 kWh of grid energy at a location-based 100 g/kWh
    p = problem(fleet([site("a", **extra)]), {"a": [100.0]}, [batch("b")])
    (piece,) = price_problem(p, [_piece("b", 1.0)])
    # Then the market-based figure follows the GHG Protocol's hierarchy
    assert piece.co2_location_g == pytest.approx(100.0)
    assert piece.co2_market_g == pytest.approx(market_g)


def test_a_covered_share_above_one_is_refused_with_how_to_fix_it() -> None:
    from scheduler.errors import ConfigError

    with pytest.raises(ConfigError, match="0..1"):
        fleet([site("a", market_factor_g_per_kwh=20.0, market_share_covered=60)])
