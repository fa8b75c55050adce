"""The planner on tiny hand-checkable problems: where work goes, and what is reported."""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import pytest
from optimizer_helpers import BIG, HOUR, SMALL, T0, batch, fleet, problem, site

from scheduler.domain import Plan, PlanStatus
from scheduler.errors import PlanningError
from scheduler.optimizer import plan_problem
from scheduler.optimizer.problem import FixedLoad, PlanningProblem
from scheduler.optimizer.validate import validate_plan


def _plan(p: PlanningProblem, **kwargs: object) -> Plan:
    plan = plan_problem(p, baselines=False, **kwargs)  # type: ignore[arg-type]
    report = validate_plan(p, plan)
    assert report.ok, report.violations
    return plan


def _slots_used(plan: Plan) -> set[int]:
    return {int((a.slot - T0).total_seconds() // 3600) for a in plan.assignments}


def test_batch_moves_to_cleaner_hour_when_deadline_allows() -> None:
    # Given one GPU-hour of work and carbon falling over three hours
    p = problem(fleet([site("a")]), {"a": [300, 200, 100]}, [batch("b", deadline_h=3)])
    # When planned carbon-first
    plan = _plan(p)
    # Then it runs in the cleanest hour, at 1 kWh x 100 g/kWh
    assert _slots_used(plan) == {2}
    assert plan.totals.co2_g == pytest.approx(100.0)
    assert plan.status is PlanStatus.OPTIMAL


def test_batch_stays_in_dirty_hour_when_deadline_forbids_waiting() -> None:
    # Given the same signals but a deadline at the end of the first hour
    p = problem(fleet([site("a")]), {"a": [300, 200, 100]}, [batch("b", deadline_h=1)])
    # When planned
    plan = _plan(p)
    # Then it runs in the first hour anyway
    assert _slots_used(plan) == {0}
    assert plan.totals.co2_g == pytest.approx(300.0)


def test_residency_is_never_violated_even_when_another_site_is_cleaner() -> None:
    # Given a clean site b and a batch that may only run at dirty site a
    p = problem(
        fleet([site("a", gpus=4), site("b", gpus=4)]),
        {"a": [500, 500], "b": [10, 10]},
        [batch("eu", sites=["a"]), batch("any")],
    )
    # When planned
    plan = _plan(p)
    # Then the restricted batch stays at a and the free one goes to b
    sites = {(a.batch, a.site) for a in plan.assignments}
    assert sites == {("eu", "a"), ("any", "b")}


def test_water_cap_binds_and_pushes_work_to_the_thirstier_but_allowed_site() -> None:
    # Given site a (clean, 1 L/kWh, cap 1.5 L/day) and site b (dirty, no water)
    a = site("a", gpus=4, wue_l_per_kwh=1.0, water_cap_l_per_day=1.5)
    p = problem(
        fleet([a, site("b", gpus=4)]),
        {"a": [10, 10], "b": [500, 500]},
        [batch("x", gpu_hours=3, requests=30)],
    )
    # When planned carbon-first
    plan = _plan(p)
    # Then site a uses exactly its water cap (1.5 kWh) and b runs the rest
    kwh = defaultdict(float)
    for asg in plan.assignments:
        kwh[asg.site] += asg.energy_kwh
    assert kwh["a"] == pytest.approx(1.5, rel=1e-3)
    assert kwh["b"] == pytest.approx(1.5, rel=1e-3)
    assert plan.totals.water_l <= 1.5 * (1 + 1e-4)


def test_objective_order_moves_the_answer_in_the_expected_direction() -> None:
    # Given carbon falling over four hours and a batch that may wait
    carbon = {"a": [400, 300, 200, 100]}
    f = fleet([site("a", gpus=2)])
    work = [batch("x", gpu_hours=2, deadline_h=4)]
    # When planned carbon-first and delay-first
    green = _plan(problem(f, carbon, work, objectives=("carbon", "delay")))
    fast = _plan(problem(f, carbon, work, objectives=("delay", "carbon")))
    # Then carbon-first is cleaner and later, delay-first dirtier and sooner
    assert green.totals.co2_g < fast.totals.co2_g
    assert green.totals.delay_h > fast.totals.delay_h
    assert _slots_used(green) == {3} and _slots_used(fast) == {0}


def test_unplaceable_batches_are_reported_with_reasons_and_the_rest_is_planned() -> None:
    # Given one good batch and five that no placement can serve
    f = fleet(
        [site("a")],
        models=[SMALL, {**BIG, "profiles": {"H100": {**BIG["profiles"]["H100"], "gpus": 8}}}],
    )
    bad = [
        batch("no-slot", start_h=0.5, deadline_h=1.2),
        batch("unknown-model", model="gpt-9"),
        batch("too-good", min_quality=0.99),
        batch("no-fit", model="big"),
        batch("no-site", sites=["mars"]),
    ]
    p = problem(f, {"a": [100, 100]}, [batch("ok", deadline_h=2), *bad])
    # When planned
    plan = _plan(p)
    # Then the good batch is placed and each bad one is listed once with its own reason
    assert {a.batch for a in plan.assignments} == {"ok"}
    reasons = {u.batch: u.reason for u in plan.unplaced}
    assert set(reasons) == {b.id for b in bad}
    assert "slot" in reasons["no-slot"]
    assert "gpt-9" in reasons["unknown-model"]
    assert "min_quality" in reasons["too-good"]
    assert "GPU" in reasons["no-fit"]
    assert "mars" in reasons["no-site"]


def test_batch_that_fits_alone_but_not_with_the_others_gets_a_capacity_reason() -> None:
    # Given one GPU for one hour and two one-GPU-hour batches
    p = problem(
        fleet([site("a")]), {"a": [100]}, [batch("x", deadline_h=1), batch("y", deadline_h=1)]
    )
    # When planned
    plan = _plan(p)
    # Then one is placed completely and the other is unplaced for lack of capacity
    assert len({a.batch for a in plan.assignments}) == 1
    assert len(plan.unplaced) == 1
    assert "not enough capacity in its window" in plan.unplaced[0].reason
    assert plan.status is PlanStatus.OPTIMAL


def test_batch_too_large_for_its_window_even_alone_says_so() -> None:
    # Given one GPU-hour of capacity and a three-GPU-hour batch next to a small one
    p = problem(
        fleet([site("a")]),
        {"a": [100]},
        [batch("huge", gpu_hours=3, deadline_h=1), batch("small", gpu_hours=0.5, deadline_h=1)],
    )
    # When planned
    plan = _plan(p)
    # Then the small one runs and the huge one is explained
    assert {a.batch for a in plan.assignments} == {"small"}
    assert [u.batch for u in plan.unplaced] == ["huge"]
    assert "even alone" in plan.unplaced[0].reason


def test_nothing_placeable_gives_an_infeasible_plan() -> None:
    # Given a single batch larger than the whole horizon
    p = problem(fleet([site("a")]), {"a": [100]}, [batch("huge", gpu_hours=3, deadline_h=1)])
    # When planned
    plan = _plan(p)
    # Then the plan is infeasible and lists the batch
    assert plan.status is PlanStatus.INFEASIBLE
    assert [u.batch for u in plan.unplaced] == ["huge"]


def test_requests_are_whole_and_tokens_proportional_when_a_batch_is_split() -> None:
    # Given 2.5 GPU-hours in 8 requests and one GPU over three equal hours
    p = problem(
        fleet([site("a")]),
        {"a": [100, 100, 100]},
        [batch("x", gpu_hours=2.5, requests=8, deadline_h=3)],
    )
    # When planned
    plan = _plan(p)
    # Then the pieces are whole requests adding up to 8, with proportional tokens
    assert len(plan.assignments) == 3
    assert sum(a.requests for a in plan.assignments) == 8
    for a in plan.assignments:
        assert isinstance(a.requests, int) and a.requests > 0
        assert a.input_tokens == pytest.approx(2.5 * 3600 * a.requests / 8)


def test_batch_whose_whole_requests_cannot_fit_is_unplaced_not_overbooked() -> None:
    # Given 2.5 GPU-hours in 7 requests (0.36 GPU-h each): only 2 fit in each one-GPU hour
    p = problem(
        fleet([site("a")]),
        {"a": [100, 100, 100]},
        [batch("x", gpu_hours=2.5, requests=7, deadline_h=3)],
    )
    # When planned
    plan = _plan(p)
    # Then nothing is overbooked: the batch is unplaced and the reason says why
    assert not plan.assignments
    assert "whole requests" in plan.unplaced[0].reason


def test_capacity_is_never_exceeded_after_rounding_to_whole_requests() -> None:
    # Given awkward request counts that fill two GPUs over three hours almost exactly
    work = [
        batch(f"b{i}", gpu_hours=0.97, requests=r, deadline_h=3)
        for i, r in enumerate((3, 7, 11, 13, 17, 19))
    ]
    p = problem(fleet([site("a", gpus=2)]), {"a": [300, 100, 200]}, work)
    # When planned
    plan = _plan(p)
    # Then no slot uses more than two GPU-hours
    used = defaultdict(float)
    for a in plan.assignments:
        used[a.slot] += a.gpu_hours
    assert not plan.unplaced
    assert max(used.values()) <= 2.0 * (1 + 1e-9)


def _big_vs_small() -> PlanningProblem:
    # small: 1 GPU (1 GPU-h per slot); big: 10 GPUs at 4 kW each; 2 GPU-hours of either.
    f = fleet(
        [
            {
                **site("a"),
                "pools": [
                    {"name": "h", "gpu": "H100", "count": 1},
                    {"name": "b", "gpu": "B200", "count": 10},
                ],
            }
        ],
        models=[
            SMALL,
            {
                **BIG,
                "profiles": {
                    "B200": {"gpus": 1, "prefill_tok_s": 1, "decode_tok_s": 1, "power_w": 4000}
                },
            },
        ],
    )
    return problem(
        f,
        {"a": [100, 100]},
        [batch("x", gpu_hours=2, min_quality=0.5)],
        objectives=("delay", "carbon"),
    )


def test_carbon_cap_moves_work_to_the_smaller_model() -> None:
    # Given delay first: without a cap half the work runs at once on the big model
    free = _plan(_big_vs_small())
    assert "big" in {a.model for a in free.assignments}
    # When the plan may emit at most 200 g (all-small: 2 kWh x 100 g/kWh)
    capped = _plan(dataclasses.replace(_big_vs_small(), carbon_cap_g=200.0))
    # Then only the small model runs (half of it an hour later), within the cap
    assert {a.model for a in capped.assignments} == {"small"}
    assert capped.totals.co2_g <= 200.0 * (1 + 1e-6)
    assert capped.totals.delay_h > free.totals.delay_h


def test_batch_beyond_the_carbon_cap_is_unplaced_with_a_budget_reason() -> None:
    # Given a cap below the cleanest way to run the batch (200 g)
    p = dataclasses.replace(_big_vs_small(), carbon_cap_g=50.0)
    # When planned
    plan = _plan(p)
    # Then it is unplaced and the reason names the carbon budget
    assert [u.batch for u in plan.unplaced] == ["x"]
    assert plan.unplaced[0].reason.startswith("carbon budget")


def test_max_quality_keeps_min_quality_batches_off_larger_models() -> None:
    # Given delay first (which would use the big model) and a budget ceiling of 0.6
    p = dataclasses.replace(_big_vs_small(), max_quality=0.6)
    # When planned
    plan = _plan(p)
    # Then only the small model serves the batch
    assert {a.model for a in plan.assignments} == {"small"}


def test_negative_price_is_earned_only_on_grid_energy_the_work_needs() -> None:
    # Given a negative price in hour 1, with no renewables there
    p = problem(
        fleet([site("a")]),
        {"a": [100, 100]},
        [batch("x", deadline_h=2)],
        objectives=("cost",),
        price={"a": [0.2, -0.1]},
    )
    # When planned cost-first
    plan = _plan(p)
    # Then it runs in the negative hour and earns exactly 1 kWh x 0.1
    assert _slots_used(plan) == {1}
    assert plan.totals.cost == pytest.approx(-0.1)


@pytest.mark.parametrize(
    "backend",
    # CBC runs as a subprocess of PuLP: slow lane
    ["pulp-highs", pytest.param("pulp-cbc", marks=pytest.mark.slow), "highs", "highs-colgen"],
)
def test_every_backend_finds_the_same_optimum(backend: str) -> None:
    # Given a problem with a trade-off between two sites and three hours
    p = problem(
        fleet([site("a", gpus=2), site("b", gpus=1)]),
        {"a": [300, 120, 200], "b": [150, 150, 90]},
        [
            batch("x", gpu_hours=2.5, deadline_h=3),
            batch("y", gpu_hours=1.5, start_h=1, deadline_h=3),
        ],
    )
    # When planned with each backend
    plan = _plan(p, backend=backend)
    # Then the carbon optimum is the hand-computed one: 1 GPU-h at b/t2 (90), 2 at a/t1 (120)
    # and 1 at b/t0 or b/t1 (150): 90 + 240 + 150 = 480 g
    assert plan.stage_optima["carbon"] == pytest.approx(480.0, rel=1e-4)


def test_mismatched_tolerances_raise_a_planning_error() -> None:
    # Given three objectives and one tolerance
    p = dataclasses.replace(
        problem(fleet([site("a")]), {"a": [1.0]}, [batch("x", deadline_h=1)]), tolerances=(0.0,)
    )
    # When/Then planning refuses with a message saying what to fix
    with pytest.raises(PlanningError, match="tolerances"):
        plan_problem(p, baselines=False)


def test_fixed_load_takes_capacity_so_new_work_goes_elsewhere() -> None:
    # Given the clean hour's only GPU already leased by running work
    p = problem(fleet([site("a")]), {"a": [300, 100]}, [batch("x", deadline_h=2)])
    leased = FixedLoad(site="a", pool="p", slot=T0 + HOUR, gpu_hours=1.0, facility_kwh=1.0)
    # When planned around it
    plan = _plan(dataclasses.replace(p, fixed=(leased,)))
    # Then the new batch runs in the dirty hour, and only its own energy is counted
    assert _slots_used(plan) == {0}
    assert plan.totals.energy_kwh == pytest.approx(1.0)


def test_tolerance_lets_a_later_stage_trade_within_the_bound() -> None:
    # Given hour 0 clean but expensive and hour 1 dirtier but cheap
    def plan_with(tolerance: float) -> Plan:
        p = problem(
            fleet([site("a", gpus=2)]),
            {"a": [100, 110]},
            [batch("x", deadline_h=2)],
            objectives=("carbon", "cost"),
            price={"a": [1.0, 0.1]},
        )
        return _plan(dataclasses.replace(p, tolerances=(tolerance, 0.0)))

    # When carbon may be 20 % above its optimum
    strict, loose = plan_with(0.0), plan_with(0.2)
    # Then the loose plan is cheaper, and its carbon stays within the bound
    assert strict.totals.co2_g == pytest.approx(100.0)
    assert loose.totals.cost < strict.totals.cost
    assert loose.totals.co2_g <= 100.0 * 1.2 + 1e-3
