"""Warm vs cold column generation on one real-trace scenario (the full re-plan's warm start).

The service's full re-plan passes the plan in force's cells (``PlanningProblem.warm_cells``)
and column generation adds them to its seed columns. This times, on one scenario solved by
``highs-colgen``: a cold solve, the same problem warm-started from the cold plan's cells, and
warm-started from half of those cells moved one slot later (a stale plan). It prints each
solve's time, the ratio against the cold solve and each stage value's relative difference.

Usage::

    python benchmarks/warm_start_bench.py                  # 2,000 batches, 48 slots
    python benchmarks/warm_start_bench.py --batches 500 --order cost,carbon,delay
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.scenarios import write_scenario  # noqa: E402
from scheduler.commands.planning import load_problem  # noqa: E402
from scheduler.domain import Plan  # noqa: E402
from scheduler.optimizer.planner import plan_problem  # noqa: E402
from scheduler.optimizer.problem import PlanningProblem, WarmCell  # noqa: E402

SHARED = ROOT.parent / "shared"


def _timed(problem: PlanningProblem, cells: tuple[WarmCell, ...]) -> tuple[Plan, float]:
    started = time.perf_counter()
    plan = plan_problem(
        dataclasses.replace(problem, warm_cells=cells), baselines=False, backend="highs-colgen"
    )
    return plan, time.perf_counter() - started


def main() -> None:
    """Parse arguments, solve cold and warm, print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=2000)
    ap.add_argument("--hours", type=int, default=48)
    ap.add_argument("--order", default="carbon,cost,delay")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        s = write_scenario(SHARED, Path(d), batches=args.batches, hours=args.hours, seed=args.seed)
        zeros = ",".join("0" * len(args.order.split(",")))
        problem = load_problem(s.fleet, s.forecasts, s.batches, args.order, zeros, 600.0)
    cold, t_cold = _timed(problem, ())
    cells = tuple((a.batch, a.site, a.pool, a.model, a.slot) for a in cold.assignments)
    step = problem.slot_delta
    stale = tuple((b, si, p, m, t + step) for b, si, p, m, t in cells[::2])
    print(f"{args.batches} batches, {args.hours} slots, order {args.order}, highs-colgen")
    print(f"cold: {t_cold:.2f} s, status {cold.status}")
    for label, seed in (("warm (plan's cells)", cells), ("warm (stale half)", stale)):
        plan, t = _timed(problem, seed)
        diffs = ", ".join(
            f"{k} {(plan.stage_optima[k] - v) / max(1.0, abs(v)):+.1e}"
            for k, v in cold.stage_optima.items()
        )
        print(
            f"{label}: {t:.2f} s ({t / t_cold:.2f}x cold), status {plan.status}, "
            f"{len(seed)} seed cells; stage values vs cold: {diffs}"
        )


if __name__ == "__main__":
    main()
