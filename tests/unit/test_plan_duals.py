"""The plan keeps the LP's binding rows (duals) and the batch explanation names them.

Hand-checkable: one site, one GPU, hourly slots at 100, 300 and 500 g/kWh; model ``small``
draws 1 kW per GPU, so one GPU-hour is 1 kWh. A batch of 1.5 GPU-hours fills the 100 g slot
and spills 0.5 GPU-hour into the 300 g slot: one more GPU-hour in the first slot would save
300 - 100 = 200 g CO2, the capacity row's shadow price.
"""

from __future__ import annotations

from datetime import UTC

import pytest
from optimizer_helpers import T0, batch, fleet, problem, site

from scheduler.domain import Plan
from scheduler.optimizer.duals import rows_json
from scheduler.optimizer.planner import plan_problem
from scheduler.review.dual_reason import dual_reason

BACKENDS = [
    "pulp-highs",
    pytest.param("pulp-cbc", marks=pytest.mark.slow),  # CBC runs as a subprocess of PuLP
    "highs",
    "highs-colgen",
]


def _plan(gpu_hours: float, backend: str, **kw: object) -> Plan:
    p = problem(
        fleet([site("es-madrid", gpus=1)]),
        {"es-madrid": [100.0, 300.0, 500.0]},
        [batch("b1", gpu_hours=gpu_hours, deadline_h=3)],
        **kw,  # type: ignore[arg-type]
    )
    return plan_problem(p, backend=backend, baselines=False)


def _cells(plan: Plan) -> list[tuple[str, str | None, object]]:
    return [(a.site, a.pool, a.slot) for a in plan.assignments]


@pytest.mark.parametrize("backend", BACKENDS)
def test_full_cleanest_slot_has_a_positive_capacity_dual_and_is_named(backend: str) -> None:
    plan = _plan(1.5, backend)
    assert {a.slot for a in plan.assignments} == {T0, T0.replace(hour=1)}
    (row,) = plan.duals
    assert (row.kind, row.site, row.pool, row.start) == ("capacity", "es-madrid", "p", T0)
    assert row.objective == "carbon"
    assert row.shadow_price == pytest.approx(200.0, rel=1e-6)
    assert row.unit == "g CO2 per GPU-hour"
    stored = rows_json(plan.duals)  # what plans.duals holds
    reason = dual_reason(stored, _cells(plan), ("es-madrid", T0.replace(hour=1)))
    assert reason is not None
    limited_by, because = reason
    assert limited_by == "capacity"
    assert "capacity of es-madrid/p at Sun 00:00 UTC was full" in because
    assert "shadow price 200 g CO2 per GPU-hour" in because


@pytest.mark.parametrize("backend", BACKENDS)
def test_slack_capacity_gives_no_capacity_reason_from_duals(backend: str) -> None:
    plan = _plan(0.5, backend)
    assert [a.slot for a in plan.assignments] == [T0]
    assert plan.duals == ()
    assert (
        dual_reason(rows_json(plan.duals), _cells(plan), ("es-madrid", T0.replace(hour=1))) is None
    )


def test_carbon_stage_duals_are_kept_when_carbon_is_not_first() -> None:
    # delay first, then carbon: the carbon stage (with delay pinned by its lex row) decides
    plan = _plan(1.5, "highs", objectives=("delay", "carbon"))
    assert [(r.kind, r.objective, r.start) for r in plan.duals] == [("capacity", "carbon", T0)]
    assert plan.duals[0].shadow_price == pytest.approx(200.0, rel=1e-6)


def test_budget_row_touches_every_cell_and_water_needs_the_same_day() -> None:
    stored = [
        {
            "kind": "water",
            "objective": "carbon",
            "shadow_price": 2.5,
            "unit": "g CO2 per litre",
            "site": "es-madrid",
            "pool": None,
            "start": T0.isoformat(),
        },
    ]
    other_day = T0.replace(day=T0.day + 1)
    assert dual_reason(stored, [("es-madrid", "p", other_day)], None) is None
    reason = dual_reason(stored, [("es-madrid", "p", T0.replace(hour=5))], None)
    assert reason is not None and reason[0] == "water cap"
    budget = [
        {
            **stored[0],
            "kind": "carbon_cap",
            "site": None,
            "start": None,
            "unit": "g CO2 per g CO2 of budget",
            "shadow_price": 0.4,
        }
    ]
    reason = dual_reason(budget, [("fi-helsinki", "p", other_day.astimezone(UTC))], None)
    assert reason is not None and reason[0] == "budget"
    assert "the carbon budget (carbon cap) was reached: shadow price 400 mg CO2 per g" in reason[1]
