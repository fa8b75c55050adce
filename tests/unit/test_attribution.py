"""Per-batch attribution of plans and baselines adds up to the plan-wide totals."""

from __future__ import annotations

from pathlib import Path

import pytest
from optimizer_helpers import example_problem

from scheduler.optimizer.attribution import baseline_by_batch, price_by_batch, sum_figures
from scheduler.optimizer.baselines import compute_baselines
from scheduler.optimizer.validate import price


@pytest.mark.parametrize("scenario", ["tiny", "two-days"])
@pytest.mark.parametrize("baseline", ["asap", "carbon_greedy"])
def test_per_batch_baseline_figures_sum_to_the_plan_wide_baseline_totals(
    shared_dir: Path, scenario: str, baseline: str
) -> None:
    # Given an example scenario and its plan-wide baseline totals
    problem = example_problem(shared_dir / "examples" / "planning" / scenario)
    totals = compute_baselines(problem)[baseline]
    # When the baseline's placement is priced per batch
    per_batch = baseline_by_batch(problem, baseline)
    summed = sum_figures(per_batch.values())
    # Then every batch it placed has figures, and they add up to the totals within 0.5 %
    assert len(per_batch) == len(problem.batches) - totals.unplaced
    assert summed.co2_g == pytest.approx(totals.co2_g, rel=5e-3)
    assert summed.cost == pytest.approx(totals.cost, rel=5e-3, abs=1e-9)
    assert summed.water_l == pytest.approx(totals.water_l, rel=5e-3)
    assert summed.delay_h == pytest.approx(totals.delay_h, rel=5e-3)
    assert all(f.co2_g > 0 and f.energy_kwh > 0 for f in per_batch.values())


def test_a_batch_alone_in_its_slot_gets_the_whole_site_slot_figures(shared_dir: Path) -> None:
    # Given the tiny scenario's asap placement
    from scheduler.optimizer.baselines import baseline_assignments

    problem = example_problem(shared_dir / "examples" / "planning" / "tiny")
    pieces, _ = baseline_assignments(problem, "asap")
    # When each piece is priced alone and the placement is priced per batch
    per_batch = price_by_batch(problem, pieces)
    # Then a batch's figures equal pricing its own pieces wherever it shares no site-slot
    keys: dict[tuple[str, object], set[str]] = {}
    for a in pieces:
        keys.setdefault((a.site, a.slot), set()).add(a.batch)
    alone = [
        b for b in per_batch if all(keys[(a.site, a.slot)] == {b} for a in pieces if a.batch == b)
    ]
    assert alone, "the tiny scenario has a batch alone in its site-slots"
    for b in alone:
        own = price(problem, [a for a in pieces if a.batch == b]).totals
        assert per_batch[b].co2_g == pytest.approx(own.co2_g, rel=1e-9)
        assert per_batch[b].water_l == pytest.approx(own.water_l, rel=1e-9)
