"""Independent re-pricing: hand-checked totals, and every kind of violation is caught."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from scheduler.domain import (
    Assignment,
    Fleet,
    Plan,
    PlanningBatch,
    PlanStatus,
    SlotSignal,
    Unplaced,
)
from scheduler.fleet import parse_fleet
from scheduler.optimizer.problem import PlanningProblem
from scheduler.optimizer.validate import price, validate_plan

T0 = datetime(2026, 11, 22, tzinfo=UTC)
H = timedelta(hours=1)


def _fleet(water_cap: float | None = None, grid_cap: float | None = None) -> Fleet:
    # small on H100: 10 prefill tok/s, 1 decode tok/s, 1 GPU, 1000 W.
    site_a = {
        "name": "a",
        "pue": 1.0,
        "wue_l_per_kwh": 1.0,
        "ewif_l_per_kwh": 2.0,
        "pools": [{"name": "p", "gpu": "H100", "count": 2, "embodied_g_per_gpu_hour": 10}],
    }
    if water_cap is not None:
        site_a["water_cap_l_per_day"] = water_cap
    if grid_cap is not None:
        site_a["grid_cap_kw"] = grid_cap
    return parse_fleet(
        {
            "slot_minutes": 60,
            "sites": [
                site_a,
                {
                    "name": "b",
                    "pue": 1.5,
                    "wue_l_per_kwh": 0.0,
                    "ewif_l_per_kwh": 1.0,
                    "pools": [{"name": "q", "gpu": "H100", "count": 1}],
                },
            ],
            "models": [
                {
                    "name": "small",
                    "quality": 0.5,
                    "profiles": {
                        "H100": {"gpus": 1, "prefill_tok_s": 10, "decode_tok_s": 1, "power_w": 1000}
                    },
                },
                {
                    "name": "big",
                    "quality": 0.9,
                    "profiles": {
                        "H100": {"gpus": 4, "prefill_tok_s": 10, "decode_tok_s": 1, "power_w": 1000}
                    },
                },
            ],
        }
    )


def _problem(fleet: Fleet, *batches: PlanningBatch) -> PlanningProblem:
    slots = tuple(T0 + i * H for i in range(3))
    signals = {
        (s, t): SlotSignal(
            t,
            s,
            carbon_g_per_kwh=100.0 + 10 * i,
            price_per_kwh=0.1,
            renewable_kw=0.5 if s == "b" else 0.0,
            wue_l_per_kwh=3.0 if (s == "a" and i == 2) else None,
        )
        for i, t in enumerate(slots)
        for s in ("a", "b")
    }
    return PlanningProblem(fleet=fleet, slots=slots, signals=signals, batches=batches)


def _batch(batch_id: str = "x", **kw: object) -> PlanningBatch:
    base: dict[str, object] = dict(
        id=batch_id,
        requests=10,
        input_tokens=3600.0,
        output_tokens=360.0,
        submitted_at=T0 + timedelta(minutes=10),
        deadline=T0 + 3 * H,
        model="small",
    )
    base.update(kw)
    return PlanningBatch(**base)  # type: ignore[arg-type]


def _piece(
    problem: PlanningProblem,
    batch: str,
    site: str,
    pool: str,
    model: str,
    slot: datetime,
    requests: int,
) -> Assignment:
    b = next(x for x in problem.batches if x.id == batch)
    share = requests / b.requests
    inp, out = b.input_tokens * share, b.output_tokens * share
    gpus = 4 if model == "big" else 1
    gpu_h = gpus * (inp / 10 + out / 1) / 3600  # the profiles above
    pue = 1.0 if site == "a" else 1.5
    return Assignment(batch, site, pool, model, slot, requests, inp, out, gpu_h, gpu_h * pue)


def _plan(
    problem: PlanningProblem, pieces: list[Assignment], unplaced: tuple[Unplaced, ...] = ()
) -> Plan:
    return Plan(
        PlanStatus.OPTIMAL,
        problem.objectives,
        problem.tolerances,
        price(problem, pieces).totals,
        tuple(pieces),
        unplaced,
    )


def test_repricing_matches_a_hand_computation() -> None:
    # Given batch x (3600 in, 360 out: 0.2 GPU-h, 0.2 kWh IT) run half at a 01:00, half at b 02:00
    problem = _problem(_fleet(), _batch())
    pieces = [
        _piece(problem, "x", "a", "p", "small", T0 + H, 5),
        _piece(problem, "x", "b", "q", "small", T0 + 2 * H, 5),
    ]
    # When re-priced
    t = price(problem, pieces).totals
    # Then, by hand: a: 0.1 kWh grid at 110 g; b: 0.15 kWh facility - 0.5 kWh renewable = 0 grid
    assert t.energy_kwh == pytest.approx(0.1 + 0.15)
    assert t.grid_kwh == pytest.approx(0.1)
    assert t.operational_co2_g == pytest.approx(0.1 * 110)
    assert t.embodied_co2_g == pytest.approx(0.1 * 10)
    assert t.cost == pytest.approx(0.1 * 0.1)
    assert t.water_l == pytest.approx(0.1 * 1.0 + 0.1 * 2.0)  # b: WUE 0 and no grid
    # delay: tokens split evenly; ends 02:00 and 03:00 after 00:10 submission
    assert t.delay_h == pytest.approx((110 / 60 + 170 / 60) / 2)


def test_a_plan_that_keeps_every_rule_has_no_violation() -> None:
    # Given a correct plan
    problem = _problem(_fleet(), _batch(), _batch("y", sites=("b",)))
    plan = _plan(
        problem,
        [
            _piece(problem, "x", "a", "p", "small", T0 + H, 10),
            _piece(problem, "y", "b", "q", "small", T0 + 2 * H, 10),
        ],
    )
    # When validated, Then it is ok and the totals are the re-priced ones
    report = validate_plan(problem, plan)
    assert report.ok, report.violations
    assert report.totals == plan.totals


def _violations(problem: PlanningProblem, plan: Plan) -> str:
    report = validate_plan(problem, plan)
    assert not report.ok
    return " | ".join(report.violations)


def test_a_model_on_a_pool_too_small_for_it_breaks_fit() -> None:
    # Given big (4 GPUs per replica) placed on a 2-GPU pool
    problem = _problem(_fleet(), _batch(model="big"))
    plan = _plan(problem, [_piece(problem, "x", "a", "p", "big", T0 + H, 10)])
    # When validated, Then fit is named
    assert "fit:" in _violations(problem, plan)


def test_more_gpu_hours_than_the_pool_has_break_capacity() -> None:
    # Given a batch needing 20 GPU-h in one slot of a 2-GPU pool
    problem = _problem(_fleet(), _batch(input_tokens=360_000.0, output_tokens=36_000.0))
    plan = _plan(problem, [_piece(problem, "x", "a", "p", "small", T0 + H, 10)])
    # When validated, Then capacity is named
    assert "capacity of a/p" in _violations(problem, plan)


def test_a_slot_before_submission_breaks_the_window() -> None:
    # Given work placed in the 00:00 slot of a batch submitted at 00:10
    problem = _problem(_fleet(), _batch())
    plan = _plan(problem, [_piece(problem, "x", "a", "p", "small", T0, 10)])
    # When validated, Then the window is named
    assert "window:" in _violations(problem, plan)


def test_a_slot_ending_after_the_deadline_breaks_the_window() -> None:
    # Given a deadline at 02:00 and work in the 02:00-03:00 slot
    problem = _problem(_fleet(), _batch(deadline=T0 + 2 * H))
    plan = _plan(problem, [_piece(problem, "x", "a", "p", "small", T0 + 2 * H, 10)])
    assert "window:" in _violations(problem, plan)


def test_a_site_outside_the_allowed_list_breaks_residency() -> None:
    # Given a batch restricted to site b placed at a
    problem = _problem(_fleet(), _batch(sites=("b",)))
    plan = _plan(problem, [_piece(problem, "x", "a", "p", "small", T0 + H, 10)])
    assert "residency:" in _violations(problem, plan)


def test_a_model_below_the_quality_floor_breaks_model_choice() -> None:
    # Given a batch asking for quality >= 0.8 served by small (0.5)
    problem = _problem(_fleet(), _batch(model=None, min_quality=0.8))
    plan = _plan(problem, [_piece(problem, "x", "a", "p", "small", T0 + H, 10)])
    assert "model choice:" in _violations(problem, plan)


def test_a_batch_partly_placed_breaks_completeness() -> None:
    # Given 6 of 10 requests placed and the batch not listed as unplaced
    problem = _problem(_fleet(), _batch())
    plan = _plan(problem, [_piece(problem, "x", "a", "p", "small", T0 + H, 6)])
    assert "completeness: x has 6 of 10" in _violations(problem, plan)


def test_a_batch_both_placed_and_unplaced_breaks_completeness() -> None:
    # Given a placed batch also listed as unplaced
    problem = _problem(_fleet(), _batch())
    plan = _plan(
        problem, [_piece(problem, "x", "a", "p", "small", T0 + H, 10)], (Unplaced("x", "no room"),)
    )
    assert "listed as unplaced but has 10" in _violations(problem, plan)


def test_an_unplaced_batch_with_no_pieces_is_accepted() -> None:
    # Given a batch listed as unplaced with nothing placed
    problem = _problem(_fleet(), _batch())
    report = validate_plan(problem, _plan(problem, [], (Unplaced("x", "no room"),)))
    # Then it is fine
    assert report.ok, report.violations


def test_tokens_far_from_the_requests_share_are_caught() -> None:
    # Given 5 of 10 requests carrying 80 % of the input tokens
    problem = _problem(_fleet(), _batch())
    a = _piece(problem, "x", "a", "p", "small", T0 + H, 5)
    b = _piece(problem, "x", "a", "p", "small", T0 + 2 * H, 5)
    bad = [replace(a, input_tokens=2880.0), replace(b, input_tokens=720.0)]
    bad = [
        replace(
            p,
            gpu_hours=(p.input_tokens / 10 + p.output_tokens) / 3600,
            energy_kwh=(p.input_tokens / 10 + p.output_tokens) / 3600,
        )
        for p in bad
    ]
    assert "input_tokens 2880.0 is not proportional" in _violations(problem, _plan(problem, bad))


def test_fractional_requests_are_caught() -> None:
    # Given an assignment of 2.5 requests
    problem = _problem(_fleet(), _batch(requests=5, input_tokens=1800.0, output_tokens=180.0))
    piece = _piece(problem, "x", "a", "p", "small", T0 + H, 5)
    plan = _plan(problem, [replace(piece, requests=2.5)])  # type: ignore[arg-type]
    assert "whole number" in _violations(problem, plan)


def test_exceeding_the_daily_water_cap_is_caught() -> None:
    # Given a 0.2 L/day cap at site a and 0.2 kWh IT there (0.2 L on-site + 0.4 L off-site)
    problem = _problem(_fleet(water_cap=0.2), _batch())
    plan = _plan(problem, [_piece(problem, "x", "a", "p", "small", T0 + H, 10)])
    assert "water cap of a" in _violations(problem, plan)


def test_exceeding_the_grid_cap_is_caught() -> None:
    # Given a 0.1 kW grid cap at site a and 0.2 kWh drawn in one hour
    problem = _problem(_fleet(grid_cap=0.1), _batch())
    plan = _plan(problem, [_piece(problem, "x", "a", "p", "small", T0 + H, 10)])
    assert "grid cap of a" in _violations(problem, plan)


def test_totals_more_than_0_2_percent_off_are_caught() -> None:
    # Given a correct plan whose reported CO2 is 1 % low
    problem = _problem(_fleet(), _batch())
    plan = _plan(problem, [_piece(problem, "x", "a", "p", "small", T0 + H, 10)])
    bad = replace(plan, totals=replace(plan.totals, co2_g=plan.totals.co2_g * 0.99))
    assert "totals: co2_g" in _violations(problem, bad)


def test_an_assignment_misreporting_its_energy_is_caught() -> None:
    # Given an assignment that reports half its facility energy
    problem = _problem(_fleet(), _batch())
    piece = _piece(problem, "x", "a", "p", "small", T0 + H, 10)
    plan = _plan(problem, [replace(piece, energy_kwh=piece.energy_kwh / 2)])
    assert "re-priced" in _violations(problem, plan)


def test_the_wue_column_overrides_the_site_default() -> None:
    # Given the same work at site a in slot 01:00 (default WUE 1.0) and 02:00 (column says 3.0)
    problem = _problem(_fleet(), _batch())
    w1 = price(problem, [_piece(problem, "x", "a", "p", "small", T0 + H, 10)]).totals.water_l
    w2 = price(problem, [_piece(problem, "x", "a", "p", "small", T0 + 2 * H, 10)]).totals.water_l
    # Then on-site water triples while off-site stays (0.2 kWh grid x 2 L/kWh)
    assert w1 == pytest.approx(0.2 * 1.0 + 0.4)
    assert w2 == pytest.approx(0.2 * 3.0 + 0.4)
