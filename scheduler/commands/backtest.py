"""``gridshift backtest``: replay a night on forecast vintages, price it on what really happened."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from scheduler.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from scheduler.commands.planning import _tolerances
from scheduler.contract import read_batches, read_forecasts, read_vintages, write_plan
from scheduler.errors import ConfigError, GridshiftError, InvalidInput
from scheduler.fleet import load_fleet, parse_objectives
from scheduler.optimizer.arrivals import ArrivalProfile

_LABELS = {
    "rolling": "re-plan every step (the service)",
    "rolling_known": "the same, every batch known in advance",
    "rolling_no_reservations": "re-plan every step, no reservations",
    "first_vintage": "one plan on the first issue",
    "bound": "perfect knowledge (bound)",
    "asap": "asap",
    "carbon_greedy": "carbon_greedy",
}


def step_slots(text: str, slot_minutes: int) -> int:
    """``1h``, ``30m`` or ``90min`` as a whole number of slots.

    Raises:
        InvalidInput: another format, or not a positive multiple of the slot length.
    """
    m = re.fullmatch(r"\s*(\d+)\s*(h|m|min)\s*", text)
    if m is None:
        raise InvalidInput(f"--step must look like 1h or 30m, got {text!r}")
    minutes = int(m.group(1)) * (60 if m.group(2) == "h" else 1)
    if minutes <= 0 or minutes % slot_minutes:
        raise InvalidInput(
            f"--step {text} is not a positive multiple of the fleet's {slot_minutes}-minute slot"
        )
    return minutes // slot_minutes


def _profile(period: str, periods: int | None, reserve: float | None) -> ArrivalProfile | None:
    """The arrival profile of the options, the service's settings filling the gaps.

    Raises:
        InvalidInput: a period that is not like ``24h``, or negative periods or scale.
    """
    from scheduler.config import get_settings

    m = re.fullmatch(r"\s*(\d+)\s*(h|d)\s*", period)
    if m is None or int(m.group(1)) <= 0:
        raise InvalidInput(f"--arrival-period must look like 24h or 7d, got {period!r}")
    hours = int(m.group(1)) * (24 if m.group(2) == "d" else 1)
    settings = get_settings()
    n = settings.arrival_history_days if periods is None else periods
    scale = settings.arrival_reserve if reserve is None else reserve
    if n < 0 or scale < 0:
        raise InvalidInput(
            "--arrival-periods and --reserve must be >= 0 (0 turns reservations off)"
        )
    if n == 0 or scale == 0:
        return None
    return ArrivalProfile(timedelta(hours=hours), n, scale)


def register(app: typer.Typer) -> None:
    """Mount ``backtest`` on ``app``."""

    @app.command("backtest")
    def backtest_command(
        fleet: Annotated[Path, typer.Option("--fleet", help="fleet.yaml.")],
        batches: Annotated[
            Path,
            typer.Option("--batches", help="batches.jsonl; submitted_at is when each arrives."),
        ],
        vintages: Annotated[
            Path, typer.Option("--vintages", help="Forecast issues: issued_at + forecasts columns.")
        ],
        actuals: Annotated[
            Path, typer.Option("--actuals", help="forecasts.csv of what really happened.")
        ],
        out: Annotated[Path, typer.Option("--out", help="Write result.json here.")],
        plan_out: Annotated[
            Path, typer.Option("--plan-out", help="Write the committed plan (plan.json) here.")
        ],
        objectives: Annotated[
            str | None, typer.Option(help="Lexicographic order (default: fleet's).")
        ] = None,
        tolerances: Annotated[
            str | None, typer.Option(help="Relative slack per stage (default: fleet's).")
        ] = None,
        step: Annotated[
            str, typer.Option(help="Re-plan every STEP (a multiple of the slot).")
        ] = "1h",
        time_limit: Annotated[
            float, typer.Option("--time-limit", help="Solver time limit per stage (s).")
        ] = 60.0,
        history: Annotated[
            Path | None,
            typer.Option(
                "--history",
                help="batches.jsonl received before the replay: the arrival profile learns "
                "from it (and from the batches submitted so far) to reserve capacity.",
            ),
        ] = None,
        arrival_period: Annotated[
            str, typer.Option("--arrival-period", help="Period of the arrival profile.")
        ] = "24h",
        arrival_periods: Annotated[
            int | None,
            typer.Option(
                "--arrival-periods",
                help="Periods of history it learns from (default: GRIDSHIFT_ARRIVAL_HISTORY_DAYS).",
            ),
        ] = None,
        reserve: Annotated[
            float | None,
            typer.Option(
                "--reserve",
                help="Scale of the reservations; 0 turns them off (default: "
                "GRIDSHIFT_ARRIVAL_RESERVE).",
            ),
        ] = None,
    ) -> None:
        """Replay batches hour by hour on the forecasts issued so far; price it on the actuals.

        Every step re-plans what has not run with the service's own re-planning decision,
        knowing only the issues published and the batches submitted by then, and commits the
        slot that starts. result.json compares it with the perfect-knowledge plan (the bound),
        one plan on the first issue, asap and carbon_greedy. Exit codes: 0 done, 1 the
        committed plan failed its check on the actuals, 2 bad input.
        """
        from scheduler.backtest import backtest

        console = Console(stderr=True)
        try:
            the_fleet = load_fleet(fleet)
            slots, signals = read_forecasts(actuals, the_fleet)
            issues = read_vintages(vintages, the_fleet)
            objs = parse_objectives(objectives, "--objectives") if objectives else None
            profile = _profile(arrival_period, arrival_periods, reserve)
            earlier = read_batches(history) if history is not None else []
            with Progress(console=console, transient=True) as bar:
                task = bar.add_task("re-planning", total=None)

                def tick(done: int, total: int) -> None:
                    bar.update(task, completed=done, total=total)

                result = backtest(
                    the_fleet,
                    read_batches(batches),
                    issues,
                    slots,
                    signals,
                    objectives=objs,
                    tolerances=_tolerances(tolerances),
                    step_slots=step_slots(step, the_fleet.slot_minutes),
                    time_limit_s=time_limit,
                    progress=tick,
                    arrivals=profile,
                    history=earlier,
                )
        except (InvalidInput, ConfigError) as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(EXIT_USAGE) from None
        except GridshiftError as e:
            typer.echo(f"error: backtest failed: {e} [{type(e).__name__}]", err=True)
            raise typer.Exit(EXIT_FAILED) from None
        write_plan(result.committed, plan_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result.as_json(), indent=2) + "\n", encoding="utf-8")
        table = Table(title=f"backtest: {len(result.decisions)} re-plans, priced on the actuals")
        for col in ("strategy", "CO2 (g)", "regret vs bound", "cost", "delay (h)", "unplaced"):
            table.add_column(col, justify="left" if col == "strategy" else "right")
        for name, fig in result.strategies.items():
            table.add_row(
                _LABELS.get(name, name),
                f"{fig['co2_g']:,.1f}",
                f"{100 * fig['regret_co2']:+.2f} %",
                f"{fig['cost']:,.2f}",
                f"{fig['delay_h']:,.1f}",
                f"{fig['unplaced']:.0f}",
            )
        out_console = Console()
        out_console.print(table)
        if result.validation.ok:
            out_console.print("committed plan re-priced on the actuals: totals match, no violation")
        else:
            for v in result.validation.violations[:20]:
                out_console.print(f"violation: {v}")
        out_console.print(f"wrote {out} and {plan_out}")
        raise typer.Exit(EXIT_OK if result.validation.ok else EXIT_FAILED)
