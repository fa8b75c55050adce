"""Planner benchmark on real-trace scenarios: time, peak memory, objectives, LP gap, savings.

Each size runs in its own subprocess (``--one N``) so that its peak resident memory
(``ru_maxrss`` of that process) is its own. The gap is measured against the linear relaxation of
the same problem solved WITHOUT aggregation (every batch its own columns, requests divisible),
stage 1 only: ``gap = (plan f1 - LP f1*) / LP f1*``. A plan with whole requests cannot beat it.

Usage::

    python benchmarks/plan_bench.py                       # 200, 2,000 and 10,000 batches
    python benchmarks/plan_bench.py --sizes 200 2000 --tolerance-size 200
    python benchmarks/plan_bench.py --tolerances-only --tolerance-size 500
    python benchmarks/plan_bench.py --sizes 2000 --order cost,carbon,delay --water-cap-l 400

Scenarios come from ``benchmarks/scenarios.py`` (10 sites; 48 hourly slots, 72 for 10,000
batches and more unless ``--hours`` is given) and are written to a temporary directory, never
into the repository. ``--water-cap-l`` puts the same daily water cap on every site.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.scenarios import write_scenario  # noqa: E402
from scheduler.commands.planning import load_problem  # noqa: E402
from scheduler.domain import Objective  # noqa: E402
from scheduler.optimizer.planner import plan_problem  # noqa: E402
from scheduler.optimizer.validate import validate_plan  # noqa: E402

SHARED = ROOT.parent / "shared"
TOLERANCES = (0.0, 0.01, 0.03, 0.05, 0.10)


def _scenario(tmp: Path, batches: int, hours: int, seed: int) -> Any:
    s = write_scenario(SHARED, tmp, batches=batches, sites=10, hours=hours, seed=seed)
    return s


def default_hours(batches: int) -> int:
    """Slots of the targets: 48 hourly slots, 72 from 10,000 batches up."""
    return 72 if batches >= 10_000 else 48


def run_one(
    batches: int,
    hours: int,
    seed: int,
    time_limit_s: float,
    lp_gap: bool,
    order: str = "carbon,cost,delay",
    water_cap_l: float | None = None,
) -> dict[str, Any]:
    """Plan one size (no slack, so the gap is rounding only) and measure it."""
    with tempfile.TemporaryDirectory() as d:
        s = _scenario(Path(d), batches, hours, seed)
        problem = load_problem(
            s.fleet,
            s.forecasts,
            s.batches,
            order,
            ",".join("0" * len(order.split(","))),
            time_limit_s,
        )
    if water_cap_l is not None:
        sites = tuple(
            dataclasses.replace(x, water_cap_l_per_day=water_cap_l) for x in problem.fleet.sites
        )
        problem = dataclasses.replace(
            problem, fleet=dataclasses.replace(problem.fleet, sites=sites)
        )
    first = order.split(",")[0]
    started = time.perf_counter()
    plan = plan_problem(problem, baselines=False)
    solve_s = time.perf_counter() - started
    started = time.perf_counter()
    from scheduler.optimizer.baselines import compute_baselines

    baselines = compute_baselines(problem)
    baselines_s = time.perf_counter() - started
    report = validate_plan(problem, plan)
    out: dict[str, Any] = {
        "batches": batches,
        "order": order,
        "water_cap_l": water_cap_l,
        "pools": sum(len(x.pools) for x in problem.fleet.sites),
        "slots": len(problem.slots),
        "sites": len(problem.fleet.sites),
        "status": plan.status.value,
        "solve_s": round(solve_s, 2),
        "baselines_s": round(baselines_s, 2),
        "unplaced": len(plan.unplaced),
        "assignments": len(plan.assignments),
        "violations": len(report.violations),
        "totals": dataclasses.asdict(report.totals),
        "stage_optima": dict(plan.stage_optima),
        "baselines": {k: dataclasses.asdict(v) for k, v in baselines.items()},
        "notes": list(plan.notes)[:3],
    }
    # Peak memory of planning itself, before the (larger) exact relaxation below.
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    aggregated = any("groups of interchangeable" in n for n in plan.notes)
    if lp_gap and not aggregated:  # the planner's own stage 1 is the exact relaxation
        out["lp_first"] = lp = plan.stage_optima.get(first)
        if lp:
            out["gap_to_lp"] = (_total(report.totals, first) - lp) / lp
    elif lp_gap:
        started = time.perf_counter()
        try:
            relaxed = plan_problem(
                dataclasses.replace(problem, objectives=(Objective(first),), tolerances=(0.0,)),
                baselines=False,
                aggregate=False,
            )
            lp = relaxed.stage_optima.get(first)
            out["lp_first"] = lp
            out["lp_s"] = round(time.perf_counter() - started, 2)
            if lp:
                out["gap_to_lp"] = (_total(report.totals, first) - lp) / lp
        except Exception as e:  # a benchmark reports what failed and carries on
            out["lp_error"] = f"{type(e).__name__}: {e}"
    out["peak_rss_with_lp_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def _total(totals: Any, objective: str) -> float:
    """A plan total in the units of the stage optimum of ``objective``."""
    field = {"carbon": "co2_g", "cost": "cost", "water": "water_l", "delay": "delay_h"}
    return float(getattr(totals, field[objective]))


def run_tolerances(
    batches: int, hours: int, seed: int, time_limit_s: float
) -> list[dict[str, Any]]:
    """Carbon-first and cost-first orders with 0-10 % slack on the first stage."""
    rows = []
    with tempfile.TemporaryDirectory() as d:
        s = _scenario(Path(d), batches, hours, seed)
        for order in ("carbon,cost,delay", "cost,carbon,delay"):
            for tol in TOLERANCES:
                problem = load_problem(
                    s.fleet, s.forecasts, s.batches, order, f"{tol},0,0", time_limit_s
                )
                started = time.perf_counter()
                plan = plan_problem(problem, baselines=False)
                t = validate_plan(problem, plan).totals
                rows.append(
                    {
                        "order": order,
                        "tolerance": tol,
                        "co2_g": t.co2_g,
                        "cost": t.cost,
                        "water_l": t.water_l,
                        "delay_h": t.delay_h,
                        "solve_s": round(time.perf_counter() - started, 2),
                    }
                )
    return rows


def _pct(base: float, mine: float) -> str:
    return f"{100 * (base - mine) / base:+.1f} %" if base else "n/a"


def print_sizes(results: list[dict[str, Any]]) -> None:
    """Markdown tables of the size runs."""
    print(
        "| batches | slots | order | water cap (L/site/day) | status | solve (s) | peak RSS (MB) "
        "| with exact LP (MB) | CO2 (g) | cost (USD) | water (L) | "
        "delay (h) | stage-1 gap to LP | unplaced | violations |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        t = r["totals"]
        gap = f"{100 * r['gap_to_lp']:.4f} %" if "gap_to_lp" in r else r.get("lp_error", "n/a")
        print(
            f"| {r['batches']:,} | {r['slots']} | {r['order']} | {r['water_cap_l'] or '-'} | "
            f"{r['status']} | {r['solve_s']} | {r['peak_rss_mb']} | "
            f"{r['peak_rss_with_lp_mb']} | "
            f"{t['co2_g']:,.0f} | {t['cost']:,.2f} | {t['water_l']:,.1f} | {t['delay_h']:,.1f} | "
            f"{gap} | {r['unplaced']} | {r['violations']} |"
        )
    print()
    print(
        "| batches | CO2 saved vs asap | vs carbon_greedy | cost saved vs asap | vs carbon_greedy "
        "| baselines unplaced (asap / greedy) |"
    )
    print("|---|---|---|---|---|---|")
    for r in results:
        t, a, g = r["totals"], r["baselines"]["asap"], r["baselines"]["carbon_greedy"]
        print(
            f"| {r['batches']:,} | {_pct(a['co2_g'], t['co2_g'])} | {_pct(g['co2_g'], t['co2_g'])}"
            f" | {_pct(a['cost'], t['cost'])} | {_pct(g['cost'], t['cost'])} | "
            f"{a['unplaced']} / {g['unplaced']} |"
        )


def print_tolerances(rows: list[dict[str, Any]]) -> None:
    """Markdown table of the tolerance sweep."""
    print("| order | slack on stage 1 | CO2 (g) | cost (USD) | water (L) | delay (h) | solve (s) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['order']} | {100 * r['tolerance']:.0f} % | {r['co2_g']:,.0f} | "
            f"{r['cost']:,.2f} | {r['water_l']:,.1f} | {r['delay_h']:,.1f} | {r['solve_s']} |"
        )


def main() -> None:
    """Run the benchmark and print markdown tables (and raw JSON with ``--json``)."""
    parser = argparse.ArgumentParser(description="gridshift planner benchmark")
    parser.add_argument("--sizes", type=int, nargs="*", default=[200, 2000, 10000])
    parser.add_argument(
        "--hours", type=int, default=None, help="slots (default 48; 72 from 10,000 batches)"
    )
    parser.add_argument("--order", default="carbon,cost,delay", help="objective order")
    parser.add_argument("--water-cap-l", type=float, default=None, help="L per site per day")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-limit", type=float, default=600.0)
    parser.add_argument("--tolerance-size", type=int, default=200)
    parser.add_argument("--tolerances-only", action="store_true")
    parser.add_argument("--no-lp-gap", action="store_true")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.one is not None:
        print(
            json.dumps(
                run_one(
                    args.one,
                    args.hours or default_hours(args.one),
                    args.seed,
                    args.time_limit,
                    not args.no_lp_gap,
                    args.order,
                    args.water_cap_l,
                )
            )
        )
        return
    results = []
    if not args.tolerances_only:
        for n in args.sizes:
            cmd = [
                sys.executable,
                __file__,
                "--one",
                str(n),
                "--hours",
                str(args.hours or default_hours(n)),
                "--order",
                args.order,
                "--seed",
                str(args.seed),
                "--time-limit",
                str(args.time_limit),
            ]
            if args.no_lp_gap:
                cmd.append("--no-lp-gap")
            if args.water_cap_l is not None:
                cmd += ["--water-cap-l", str(args.water_cap_l)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(f"size {n} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
                continue
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            r = results[-1]
            print(f"size {n} x {r['slots']} slots: done ({r['solve_s']} s)", file=sys.stderr)
        print_sizes(results)
        print()
    rows: list[dict[str, Any]] = []
    if args.tolerance_size > 0:  # 0 skips the tolerance sweep
        hours = args.hours or default_hours(args.tolerance_size)
        rows = run_tolerances(args.tolerance_size, hours, args.seed, args.time_limit)
        print_tolerances(rows)
    if args.json:
        print(json.dumps({"sizes": results, "tolerances": rows}, indent=2))


if __name__ == "__main__":
    main()
