"""The asap and carbon_greedy baselines, against the independently computed oracle figures."""

from __future__ import annotations

from pathlib import Path

import pytest
from optimizer_helpers import example_problem

from scheduler.optimizer.baselines import baseline_assignments, compute_baselines
from scheduler.optimizer.validate import allowed_models

# shared/examples/planning/README.md, "Baselines as the contract defines them".
ORACLE = {
    "tiny": {
        "asap": (5622.2, 2.277, 60.2, 21.6, 0, 0),
        "carbon_greedy": (1529.9, 0.579, 23.9, 133.7, 0, 0),
    },
    "two-days": {
        "asap": (161896.4, 39.408, 1741.6, 1000.2, 2, 6),
        "carbon_greedy": (106592.8, 25.328, 1216.0, 3314.6, 5, 4),
    },
}


@pytest.mark.parametrize("scenario", ["tiny", "two-days"])
@pytest.mark.parametrize("baseline", ["asap", "carbon_greedy"])
def test_baseline_matches_the_oracle_figures(
    shared_dir: Path, scenario: str, baseline: str
) -> None:
    # Given an example scenario with independently computed baseline figures
    problem = example_problem(shared_dir / "examples" / "planning" / scenario)
    co2_g, cost, water_l, delay_h, unplaced, caps = ORACLE[scenario][baseline]
    # When the baselines are computed
    got = compute_baselines(problem)[baseline]
    # Then every figure agrees within 0.5 % (the README rounds to one decimal)
    assert got.co2_g == pytest.approx(co2_g, rel=5e-3)
    assert got.cost == pytest.approx(cost, rel=5e-3)
    assert got.water_l == pytest.approx(water_l, rel=5e-3)
    assert got.delay_h == pytest.approx(delay_h, rel=5e-3)
    assert (got.unplaced, got.caps_broken) == (unplaced, caps)


def test_asap_runs_the_largest_and_carbon_greedy_the_smallest_allowed_model(
    shared_dir: Path,
) -> None:
    # Given the two-days scenario, where most batches only set a quality floor
    problem = example_problem(shared_dir / "examples" / "planning" / "two-days")
    batches = {b.id: b for b in problem.batches}
    # When both baselines place them
    asap, _ = baseline_assignments(problem, "asap")
    greedy, _ = baseline_assignments(problem, "carbon_greedy")
    # Then asap always uses the best allowed model and carbon_greedy the weakest one
    quality = {m.name: m.quality for m in problem.fleet.models}
    for a in asap:
        assert quality[a.model] == max(m.quality for m in allowed_models(problem, batches[a.batch]))
    for a in greedy:
        assert quality[a.model] == min(m.quality for m in allowed_models(problem, batches[a.batch]))


def test_a_baseline_places_whole_batches_or_nothing_of_them(shared_dir: Path) -> None:
    # Given the two-days scenario, where some batches cannot fit
    problem = example_problem(shared_dir / "examples" / "planning" / "two-days")
    for name in ("asap", "carbon_greedy"):
        # When the baseline places them
        assignments, unplaced = baseline_assignments(problem, name)
        placed: dict[str, int] = {}
        for a in assignments:
            placed[a.batch] = placed.get(a.batch, 0) + a.requests
        # Then each batch is complete or entirely absent, and unplaced ones have no pieces
        assert unplaced
        for b in problem.batches:
            assert placed.get(b.id, 0) == (0 if b.id in unplaced else b.requests)


def test_an_unknown_baseline_name_is_refused(shared_dir: Path) -> None:
    # Given a problem, When asking for a baseline that does not exist, Then it is refused
    with pytest.raises(ValueError, match="unknown baseline"):
        baseline_assignments(
            example_problem(shared_dir / "examples" / "planning" / "tiny"), "random"
        )
