"""Per-UTC-day carbon caps: no day of the horizon borrows from another day's budget.

Hand-checkable: one site, one GPU, 26 hourly slots from midnight T0 (2026-11-22): the 24 slots
of today at 100 g/kWh, the 2 slots of tomorrow at 200 g/kWh. Model ``small`` turns one GPU-hour
into 1 kWh, so the 1 GPU-hour batch emits 100 g today or 200 g tomorrow.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, timedelta

import pytest
from optimizer_helpers import T0, batch, fleet, problem, site

from scheduler.domain import Plan
from scheduler.optimizer.duals import rows_json
from scheduler.optimizer.model import build_model
from scheduler.optimizer.planner import plan_problem
from scheduler.optimizer.problem import PlanningProblem
from scheduler.optimizer.validate import validate_plan
from scheduler.review.dual_reason import dual_reason

BACKENDS = ["pulp-highs", "highs", "highs-colgen"]
TODAY = T0.date()
TOMORROW = TODAY + timedelta(days=1)


def _problem(deadline_h: float = 26, **kw: object) -> PlanningProblem:
    return problem(
        fleet([site("a", gpus=1)]),
        {"a": [100.0] * 24 + [200.0] * 2},
        [batch("b", gpu_hours=1.0, deadline_h=deadline_h)],
        **kw,  # type: ignore[arg-type]
    )


def _plan(p: PlanningProblem, backend: str = "highs") -> Plan:
    plan = plan_problem(p, backend=backend, baselines=False)
    report = validate_plan(p, plan)
    assert report.ok, report.violations
    return plan


def _co2_by_day(plan: Plan) -> dict[object, float]:
    """Planned CO2 per UTC day: energy x the day's 100 or 200 g/kWh."""
    out: dict[object, float] = {}
    for a in plan.assignments:
        day = a.slot.astimezone(UTC).date()
        out[day] = out.get(day, 0.0) + a.energy_kwh * (100.0 if day == TODAY else 200.0)
    return out


def test_one_row_per_capped_day_named_by_its_date() -> None:
    model = build_model(_problem(carbon_cap_by_day_g={TODAY: 50.0, TOMORROW: 500.0}), [])
    assert "carbon_cap__d20261122" in model.row_names
    assert "carbon_cap__d20261123" in model.row_names
    assert "carbon_cap" not in model.row_names


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_batch_that_would_spend_tomorrows_budget_today_moves_to_tomorrow(backend: str) -> None:
    # Given 550 g for the whole horizon, the batch runs today at 100 g (its cleanest hours)
    whole = _plan(_problem(carbon_cap_g=550.0), backend)
    assert set(_co2_by_day(whole)) == {TODAY}
    assert whole.totals.co2_g == pytest.approx(100.0)
    # When today may spend 50 g and tomorrow 500 g (the same 550 g, but per day)
    per_day = _plan(_problem(carbon_cap_by_day_g={TODAY: 50.0, TOMORROW: 500.0}), backend)
    # Then at most 50 g are spent today (half the batch) and the rest runs tomorrow at 200 g/kWh
    by_day = _co2_by_day(per_day)
    assert by_day[TODAY] <= 50.0 * (1 + 1e-4)
    assert by_day[TODAY] == pytest.approx(50.0, rel=0.1)
    assert by_day[TOMORROW] == pytest.approx(100.0, rel=0.1)
    assert per_day.unplaced == ()


def test_the_binding_day_cap_is_a_dual_of_that_day_and_names_its_date() -> None:
    plan = _plan(_problem(carbon_cap_by_day_g={TODAY: 50.0, TOMORROW: 500.0}))
    caps = [r for r in plan.duals if r.kind == "carbon_cap"]
    # one more gram today saves 200 - 100 = 100 g per kWh / (100 g per kWh) = 1 g tomorrow
    assert [(r.start, r.shadow_price) for r in caps] == [
        (T0, pytest.approx(1.0, rel=1e-6)),
    ]
    stored = rows_json(plan.duals)
    today_cell = [("a", "p", T0.replace(hour=3))]
    reason = dual_reason(stored, today_cell, None)
    assert reason is not None and reason[0] == "budget"
    assert "the carbon budget of Sun 22 Nov (its daily carbon cap) was reached" in reason[1]
    # a cell of tomorrow does not touch today's cap
    assert dual_reason(stored, [("a", "p", T0 + timedelta(hours=24))], None) is None


def test_a_batch_that_only_fits_today_is_refused_when_today_is_spent() -> None:
    # Given its deadline tonight, 50 g left today and plenty tomorrow
    p = _problem(deadline_h=24, carbon_cap_by_day_g={TODAY: 50.0, TOMORROW: 500.0})
    # When planned
    plan = _plan(p)
    # Then it is unplaced, for the carbon budget of today
    assert [u.batch for u in plan.unplaced] == ["b"]
    assert plan.unplaced[0].reason.startswith("carbon budget")
    assert "50 g CO2 on 2026-11-22" in plan.unplaced[0].reason


def test_the_cap_rows_price_grid_energy_at_the_booked_factor() -> None:
    # Given the signal says 100 g/kWh today but booking charges 40 g/kWh (a marginal site's
    # average direct factor): 50 g of today's budget then holds the whole batch (40 g)
    p = _problem(carbon_cap_by_day_g={TODAY: 50.0, TOMORROW: 500.0})
    booked = {(s, t): 40.0 for (s, t) in p.signals if t.date() == TODAY}
    plan = _plan(dataclasses.replace(p, cap_carbon_g_per_kwh=booked))
    # Then it all runs today, and the plan's objective still prices the signal (100 g)
    assert set(_co2_by_day(plan)) == {TODAY}
    assert plan.totals.co2_g == pytest.approx(100.0)
