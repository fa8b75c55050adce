"""Property: on random small problems every plan is feasible and its totals re-price."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from optimizer_helpers import BIG, SMALL, batch, fleet, problem, site

from scheduler.domain import PlanningBatch
from scheduler.optimizer import plan_problem
from scheduler.optimizer.problem import PlanningProblem
from scheduler.optimizer.validate import validate_plan

SITES = ("a", "b")


@st.composite
def problems(draw: st.DrawFn) -> PlanningProblem:
    n_sites = draw(st.integers(1, 2))
    n_slots = draw(st.integers(1, 4))
    sites = [
        site(
            name,
            gpus=draw(st.integers(1, 3)),
            wue_l_per_kwh=draw(st.sampled_from([0.0, 1.0])),
            **({"water_cap_l_per_day": 2.0} if draw(st.booleans()) else {}),
        )
        for name in SITES[:n_sites]
    ]
    carbon = {s["name"]: [draw(st.floats(0, 500)) for _ in range(n_slots)] for s in sites}
    renewable = {
        s["name"]: [draw(st.sampled_from([0.0, 0.0, 0.5, 2.0])) for _ in range(n_slots)]
        for s in sites
    }
    price = {
        s["name"]: [draw(st.sampled_from([-0.05, 0.1, 0.3])) for _ in range(n_slots)] for s in sites
    }
    batches: list[PlanningBatch] = []
    for i in range(draw(st.integers(1, 4))):
        start = draw(st.floats(0, n_slots - 0.5))
        kind = draw(st.sampled_from(["small", "big", "any"]))
        allowed = draw(st.sampled_from([None, ["a"], ["b"]]))
        batches.append(
            batch(
                f"b{i}",
                gpu_hours=draw(st.floats(0.05, 2.5)),
                requests=draw(st.integers(1, 25)),
                start_h=start,
                deadline_h=start + draw(st.floats(0.5, 4)),
                model=None if kind == "any" else kind,
                min_quality=0.4 if kind == "any" else None,
                sites=allowed,
                priority=draw(st.sampled_from([0.5, 1.0, 2.0])),
            )
        )
    order = draw(st.permutations(["carbon", "cost", "water", "delay"]))[:3]
    return problem(
        fleet(sites, models=[SMALL, BIG]),
        carbon,
        batches,
        objectives=tuple(order),
        price=price,
        renewable_kw=renewable,
    )


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["auto", "highs-colgen"])
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(p=problems())
def test_every_plan_is_feasible_complete_and_reprices(backend: str, p: PlanningProblem) -> None:
    # Given a random small problem; When planned (PuLP for small models, or column generation)
    plan = plan_problem(p, baselines=False, backend=backend)
    # Then the independent checker finds no violation (capacity, caps, windows, residency,
    # whole requests, completeness, totals within 0.2 %)
    report = validate_plan(p, plan)
    assert report.ok, report.violations
    # And every batch is either placed or listed as unplaced, never both, never neither
    placed = {a.batch for a in plan.assignments}
    unplaced = {u.batch for u in plan.unplaced}
    assert placed.isdisjoint(unplaced)
    assert placed | unplaced == {b.id for b in p.batches}
