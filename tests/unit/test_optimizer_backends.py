"""Solver backends: one protocol, column generation's proven bound and placement-stage infeasibility."""

from __future__ import annotations

import ast
import math
import random
from pathlib import Path

import pytest
from optimizer_helpers import batch, fleet, problem, site

from scheduler.optimizer import plan_problem
from scheduler.optimizer.aggregate import candidates, group_candidates
from scheduler.optimizer.backends import colgen, make_backend
from scheduler.optimizer.model import LinearModel, build_model
from scheduler.optimizer.problem import PlanningProblem

OPTIMIZER = Path(__file__).resolve().parents[2] / "scheduler" / "optimizer"


def _model(p: PlanningProblem) -> LinearModel:
    cands, _ = candidates(p)
    return build_model(p, group_candidates(p, cands, aggregate=False), headroom=0.0)


def _spread() -> PlanningProblem:
    # Three sites, 24 hours of varied carbon and 30 batches with staggered windows.
    rng = random.Random(12)
    carbon = {s: [rng.uniform(50, 400) for _ in range(24)] for s in ("a", "b", "c")}
    batches = [
        batch(
            f"b{i}",
            gpu_hours=rng.uniform(0.5, 3),
            start_h=(s := rng.randint(0, 12)),
            deadline_h=s + rng.randint(4, 12),
        )
        for i in range(30)
    ]
    return problem(
        fleet([site("a", gpus=2), site("b", gpus=2), site("c", gpus=1)]), carbon, batches
    )


def test_column_generation_bound_brackets_the_optimum_when_stopped_early(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the carbon stage of a problem whose optimum the whole LP in HiGHS gives
    m = _model(_spread())
    exact = make_backend(m, "highs")
    exact.set_objective(m.objectives["carbon"])
    optimum = exact.run(60).objective
    # When column generation may only price once
    monkeypatch.setattr(colgen, "_MAX_ROUNDS", 1)
    early = make_backend(m, "highs-colgen")
    early.set_objective(m.objectives["carbon"])
    res = early.run(60)
    # Then it stops with a feasible point and a finite bound on the right side of the optimum
    assert res.status == "feasible"
    assert math.isfinite(res.bound)
    assert res.bound <= optimum + 1e-6 * abs(optimum)
    assert res.objective >= optimum - 1e-6 * abs(optimum)
    assert res.bound < res.objective  # the gap is real: more columns were pricing out


def test_column_generation_bound_meets_the_objective_at_the_optimum() -> None:
    # Given the same stage solved to the end
    m = _model(_spread())
    cg = make_backend(m, "highs-colgen")
    cg.set_objective(m.objectives["carbon"])
    res = cg.run(60)
    # Then it is optimal and its proven bound equals its value (pricing tolerance aside)
    assert res.status == "optimal"
    assert res.bound == pytest.approx(res.objective, rel=1e-7)


@pytest.mark.parametrize("gpus", [1, 2])
def test_column_generation_decides_infeasibility_like_the_whole_lp(gpus: int) -> None:
    # Given two one-GPU-hour batches in one hour at one site with one (too few) or two GPUs
    p = problem(
        fleet([site("a", gpus=gpus)]),
        {"a": [100]},
        [batch("x", deadline_h=1), batch("y", deadline_h=1)],
    )
    m = _model(p)
    statuses = []
    for name in ("highs", "highs-colgen"):
        b = make_backend(m, name)
        b.set_objective(m.objectives["carbon"])
        statuses.append(b.run(60).status)
    # Then column generation (its placement stage) agrees with the whole LP
    assert statuses[0] == statuses[1] == ("infeasible" if gpus == 1 else "optimal")


def test_a_batch_costlier_than_the_artificial_share_is_still_placed() -> None:
    # Given one batch whose placement costs 2,000 kWh x 100 g more than the artificial
    # "unplaced" share's cost (1e4 x the largest cost coefficient), and room for it
    p = problem(
        fleet([site("a", gpus=1000)]),
        {"a": [100.0] * 24},
        [batch("huge", gpu_hours=20000, requests=20000, deadline_h=24)],
    )
    # When planned by column generation
    plan = plan_problem(p, baselines=False, backend="highs-colgen")
    # Then the placement stage, not the big cost, decides: it is placed, at the true optimum
    assert plan.unplaced == ()
    assert plan.stage_optima["carbon"] == pytest.approx(2e6, rel=1e-9)


@pytest.mark.parametrize("backend", ["highs", "highs-colgen"])
def test_every_backend_unplaces_the_same_batches(backend: str) -> None:
    # Given one GPU-hour, a batch too large even alone and two that compete for the hour
    p = problem(
        fleet([site("a")]),
        {"a": [100, 300]},
        [
            batch("huge", gpu_hours=5, deadline_h=2),
            batch("x", deadline_h=1),
            batch("y", gpu_hours=0.5, deadline_h=1),
            batch("z", gpu_hours=0.5, deadline_h=2),
        ],
    )
    # When planned with PuLP and with the backend
    reference = plan_problem(p, baselines=False, backend="pulp-highs")
    plan = plan_problem(p, baselines=False, backend=backend)
    # Then the same batches are unplaced, for the same reasons, and the optima agree
    assert [u.batch for u in reference.unplaced][0] == "huge"
    assert plan.unplaced == reference.unplaced
    assert plan.stage_optima["carbon"] == pytest.approx(reference.stage_optima["carbon"], rel=1e-6)


def test_backends_do_not_import_the_lexicographic_loop() -> None:
    # Given the backends' modules and solve.py
    def imports(path: Path) -> set[str]:
        tree = ast.parse(path.read_text())
        return {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}

    # Then no backend imports solve.py, and solve.py knows only the protocol (no discovery)
    for path in (OPTIMIZER / "backends").glob("*.py"):
        assert "scheduler.optimizer.solve" not in imports(path), path.name
    solve = OPTIMIZER / "solve.py"
    assert (
        imports(solve) & {f"scheduler.optimizer.backends.{n}" for n in ("colgen", "highs", "pulp")}
        == set()
    )
    assert "getattr" not in solve.read_text()
    assert not (OPTIMIZER / "colgen.py").exists()
