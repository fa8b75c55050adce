"""``gridshift plan``: plan on files (fleet, forecasts, batches), offline, no server."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from scheduler.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from scheduler.contract import (
    build_problem,
    plan_to_json,
    read_batches,
    read_forecasts,
    read_plan,
    write_plan,
)
from scheduler.domain import Plan, PlanStatus
from scheduler.errors import ConfigError, GridshiftError, InvalidInput
from scheduler.fleet import load_fleet, parse_objectives
from scheduler.optimizer.problem import PlanningProblem
from scheduler.optimizer.validate import ValidationReport, price, validate_plan

_COMPARED = (
    ("co2_g", "CO2 (g)"),
    ("cost", "cost"),
    ("water_l", "water (L)"),
    ("delay_h", "delay (h)"),
)


def _tolerances(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise InvalidInput(
            f"--tolerances must be comma-separated numbers such as 0.01,0,0, got {text!r}"
        ) from None


def load_problem(
    fleet_path: Path,
    forecasts_path: Path,
    batches_path: Path,
    objectives: str | None = None,
    tolerances: str | None = None,
    time_limit_s: float = 60.0,
) -> PlanningProblem:
    """Read the three contract files and assemble the planning problem.

    Raises:
        ConfigError: an invalid ``fleet.yaml`` or objective list.
        InvalidInput: invalid forecasts, batches or tolerances (with line numbers).
    """
    fleet = load_fleet(fleet_path)
    slots, signals = read_forecasts(forecasts_path, fleet)
    batches = read_batches(batches_path)
    objs = parse_objectives(objectives, "--objectives") if objectives else None
    return build_problem(
        fleet, slots, signals, batches, objs, _tolerances(tolerances), time_limit_s=time_limit_s
    )


def _fmt(value: float) -> str:
    return f"{value:,.3f}" if abs(value) < 1000 else f"{value:,.1f}"


def print_summary(
    console: Console, problem: PlanningProblem, plan: Plan, report: ValidationReport | None = None
) -> None:
    """Print per-site figures, totals, stage optima, savings vs baselines and unplaced work."""
    sites = Table(title="Plan by site (priced by planning-formats.md section 4)")
    for col in ("site", "pieces", "requests", "kWh", "CO2 (g)", "cost", "water (L)"):
        sites.add_column(col, justify="left" if col == "site" else "right")
    for site in problem.fleet.sites:
        mine = [a for a in plan.assignments if a.site == site.name]
        if not mine:
            continue
        t = price(problem, mine).totals
        sites.add_row(
            site.name,
            str(len(mine)),
            f"{sum(a.requests for a in mine):,}",
            _fmt(t.energy_kwh),
            _fmt(t.co2_g),
            _fmt(t.cost),
            _fmt(t.water_l),
        )
    t = plan.totals
    sites.add_row(
        "total",
        str(len(plan.assignments)),
        f"{sum(a.requests for a in plan.assignments):,}",
        _fmt(t.energy_kwh),
        _fmt(t.co2_g),
        _fmt(t.cost),
        _fmt(t.water_l),
        style="bold",
    )
    console.print(sites)
    console.print(
        f"totals: CO2 {_fmt(t.co2_g)} g (operational {_fmt(t.operational_co2_g)}, embodied "
        f"{_fmt(t.embodied_co2_g)}), cost {_fmt(t.cost)}, water {_fmt(t.water_l)} L, energy "
        f"{_fmt(t.energy_kwh)} kWh (grid {_fmt(t.grid_kwh)}), delay {_fmt(t.delay_h)} h"
    )
    if plan.stage_optima:
        stages = ", ".join(f"{k} = {_fmt(v)}" for k, v in plan.stage_optima.items())
        console.print(f"stage optima ({', '.join(o.value for o in plan.objectives)}): {stages}")
    if plan.baselines:
        console.print(_savings_table(plan, report))
    for u in plan.unplaced:
        console.print(f"unplaced: {u.batch}: {u.reason}")
    for note in plan.notes:
        console.print(f"note: {note}")
    console.print(
        f"status: {plan.status.value} ({len(plan.unplaced)} unplaced of {len(problem.batches)} "
        f"batches), solved in {plan.solve_s:.2f} s"
    )


def _savings_table(plan: Plan, report: ValidationReport | None) -> Table:
    """Rows: metrics; columns: this plan, then each baseline and what the plan saves against it."""
    table = Table(title="This plan against the baselines (saved = baseline - plan)")
    table.add_column("metric")
    table.add_column("plan", justify="right")
    for name in plan.baselines:
        table.add_column(name, justify="right")
        table.add_column("saved", justify="right")
    for key, label in _COMPARED:
        mine = getattr(plan.totals, key)
        cells = [_fmt(mine)]
        for b in plan.baselines.values():
            base = getattr(b, key)
            pct = f" ({100 * (base - mine) / base:+.1f} %)" if base else ""
            cells += [_fmt(base), f"{_fmt(base - mine)}{pct}"]
        table.add_row(label, *cells)
    for key in ("unplaced", "caps_broken"):
        if key == "unplaced":
            cells = [str(len(plan.unplaced))]
        else:
            cells = [str(report.caps_broken) if report is not None else "-"]
        for b in plan.baselines.values():
            cells += [str(getattr(b, key)), ""]
        table.add_row(key.replace("_", " "), *cells)
    return table


def _print_report(console: Console, report: ValidationReport) -> None:
    if report.ok:
        console.print("independent re-pricing: ok (every constraint holds, totals within 0.2 %)")
        return
    console.print(f"independent re-pricing: {len(report.violations)} violation(s)", style="red")
    for v in report.violations[:30]:
        console.print(f"  {v}")


def register(app: typer.Typer) -> None:
    """Mount ``plan`` on ``app``."""

    @app.command("plan")
    def plan_command(
        fleet: Annotated[Path, typer.Option("--fleet", help="fleet.yaml (sites, pools, models).")],
        forecasts: Annotated[
            Path, typer.Option("--forecasts", help="forecasts.csv: one row per site and slot.")
        ],
        batches: Annotated[
            Path, typer.Option("--batches", help="batches.jsonl: one planning job per line.")
        ],
        objectives: Annotated[
            str | None,
            typer.Option(help="Lexicographic order, e.g. carbon,cost,delay (default: fleet's)."),
        ] = None,
        tolerances: Annotated[
            str | None,
            typer.Option(help="Relative slack per stage, e.g. 0.01,0,0 (default: fleet's)."),
        ] = None,
        time_limit: Annotated[
            float,
            typer.Option(
                "--time-limit", help="Solver time limit per stage (s); 10,000 batches need ~3 min."
            ),
        ] = 600.0,
        out: Annotated[Path | None, typer.Option("--out", help="Write plan.json here.")] = None,
        check: Annotated[
            Path | None,
            typer.Option("--check", help="Do not plan: re-price and check this plan.json."),
        ] = None,
        baselines: Annotated[
            bool, typer.Option(help="Compute the asap and carbon_greedy baselines.")
        ] = True,
        as_json: Annotated[bool, typer.Option("--json", help="Print plan.json on stdout.")] = False,
    ) -> None:
        """Plan batches on files, offline: where, when and on which model each piece runs.

        Exit codes: 0 planned (or --check passed), 1 infeasible (or --check found violations),
        2 bad input.
        """
        console = Console(stderr=as_json)
        try:
            problem = load_problem(fleet, forecasts, batches, objectives, tolerances, time_limit)
            if check is not None:
                report = validate_plan(problem, read_plan(check))
                _print_report(console, report)
                raise typer.Exit(EXIT_OK if report.ok else EXIT_FAILED)
            from scheduler.optimizer.planner import plan_problem

            started = time.perf_counter()
            plan = plan_problem(problem, baselines=baselines)
            elapsed = time.perf_counter() - started
        except (InvalidInput, ConfigError) as e:
            errors = getattr(e, "errors", [])
            # The message already quotes the first three; list the rest of a long report.
            details = "".join(f"\n  line {x.line}: {x.message}" for x in errors[3:20] if x.line)
            typer.echo(f"error: {e}{details}", err=True)
            raise typer.Exit(EXIT_USAGE) from None
        except GridshiftError as e:
            typer.echo(f"error: planning failed: {e} [{type(e).__name__}]", err=True)
            raise typer.Exit(EXIT_FAILED) from None
        if out is not None:
            write_plan(plan, out)
        if not console.is_terminal:
            console.width = 120  # logs and pipes: wide enough for the savings table
        report = validate_plan(problem, plan)
        print_summary(console, problem, plan, report)
        _print_report(console, report)
        if out is not None:
            console.print(f"wrote {out} (wall time {elapsed:.2f} s)")
        if as_json:
            typer.echo(json.dumps(plan_to_json(plan), indent=2))
        if plan.status is PlanStatus.INFEASIBLE:
            raise typer.Exit(EXIT_FAILED)
