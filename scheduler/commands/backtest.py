"""``gridshift backtest``: replay a night on forecast vintages, price it on what really happened.

Two sources of the same inputs: files (``--fleet --batches --vintages --actuals``) or the
store's own history (``--store --since --until``, ``scheduler.backtest_store``).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

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

if TYPE_CHECKING:
    from scheduler.backtest import BacktestResult
    from scheduler.backtest_store import BacktestInputs
    from scheduler.domain import PlanningBatch

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


def _store_history(
    fleet: Path | None, since: str | None, until: str | None, profile: ArrivalProfile | None
) -> tuple[BacktestInputs, list[PlanningBatch]]:
    """The store's inputs for ``[since, until)`` (the settings' database and fleet), and the
    batches it received in the profile's history before ``since`` (none without a profile).

    Raises:
        InvalidInput: a missing or bad time, or a window the store cannot replay.
        ConfigError: no store, or no gridshift schema in it.
    """
    from scheduler.backtest_store import arrival_history, load_store_history
    from scheduler.commands.review import parse_time, store_session
    from scheduler.config import get_settings
    from scheduler.samples import load_sample_fleet

    start, end = parse_time(since, "--since"), parse_time(until, "--until")
    if start is None or end is None:
        raise InvalidInput(
            "--store needs --since and --until, e.g. --since 2026-11-01T00:00Z "
            "--until 2026-11-02T00:00Z"
        )
    settings = get_settings()
    path = fleet or settings.fleet
    the_fleet = load_fleet(path) if path else load_sample_fleet()
    with store_session() as session:
        inputs = load_store_history(
            session, the_fleet, start, end, hold=timedelta(hours=settings.horizon_hours)
        )
        return inputs, arrival_history(session, start, profile)


def _file_inputs(
    fleet: Path | None, batches: Path | None, vintages: Path | None, actuals: Path | None
) -> BacktestInputs:
    from scheduler.backtest_store import BacktestInputs

    given = {"--fleet": fleet, "--batches": batches, "--vintages": vintages, "--actuals": actuals}
    missing = [name for name, v in given.items() if v is None]
    if fleet is None or batches is None or vintages is None or actuals is None:
        raise InvalidInput(
            f"missing {', '.join(missing)}: replay files with --fleet, --batches, --vintages "
            "and --actuals, or the store's own history with --store --since --until"
        )
    the_fleet = load_fleet(fleet)
    slots, signals = read_forecasts(actuals, the_fleet)
    return BacktestInputs(
        the_fleet, read_batches(batches), read_vintages(vintages, the_fleet), slots, dict(signals)
    )


def _check_mode(
    store: bool, files: Mapping[str, Path | None], since: str | None, until: str | None
) -> None:
    if store:
        mixed = [name for name, v in files.items() if v is not None]
        if mixed:
            raise InvalidInput(
                f"--store replays the store's own history and cannot take {', '.join(mixed)}; "
                "drop them, or drop --store to replay files"
            )
    elif since is not None or until is not None:
        raise InvalidInput(
            "--since/--until choose the window of --store; add --store to replay the store, "
            "or drop them (a file replay spans its actuals file)"
        )


def _actual_sources(actuals: Mapping[tuple[str, datetime], Any]) -> dict[str, dict[str, int]]:
    """Per signal, how many (site, slot) actuals came from each source (``carbon=ledger;...``)."""
    counts: dict[str, Counter[str]] = {}
    for sig in actuals.values():
        for part in str(sig.source).split(";"):
            name, _, origin = part.partition("=")
            if origin:
                counts.setdefault(name, Counter())[origin] += 1
    return {name: dict(c) for name, c in counts.items()}


def register(app: typer.Typer) -> None:
    """Mount ``backtest`` on ``app``."""

    @app.command("backtest")
    def backtest_command(
        out: Annotated[Path, typer.Option("--out", help="Write result.json here.")],
        plan_out: Annotated[
            Path, typer.Option("--plan-out", help="Write the committed plan (plan.json) here.")
        ],
        fleet: Annotated[
            Path | None,
            typer.Option(
                "--fleet", help="fleet.yaml (with --store: default GRIDSHIFT_FLEET or the sample)."
            ),
        ] = None,
        batches: Annotated[
            Path | None,
            typer.Option("--batches", help="batches.jsonl; submitted_at is when each arrives."),
        ] = None,
        vintages: Annotated[
            Path | None,
            typer.Option("--vintages", help="Forecast issues: issued_at + forecasts columns."),
        ] = None,
        actuals: Annotated[
            Path | None, typer.Option("--actuals", help="forecasts.csv of what really happened.")
        ] = None,
        store: Annotated[
            bool,
            typer.Option(
                "--store",
                help="Replay the store's own history (GRIDSHIFT_DATABASE_URL) between --since "
                "and --until instead of files: the batches it received, the forecast issues it "
                "kept, the actuals it booked.",
            ),
        ] = False,
        since: Annotated[
            str | None, typer.Option("--since", help="With --store: first slot (ISO-8601, UTC).")
        ] = None,
        until: Annotated[
            str | None, typer.Option("--until", help="With --store: end of the window (excl.).")
        ] = None,
        objectives: Annotated[
            str | None, typer.Option(help="Lexicographic order (default: fleet's).")
        ] = None,
        tolerances: Annotated[
            str | None,
            typer.Option(
                help="Relative slack per stage (default: fleet's); e.g. 0,0,0 to see what "
                "another tolerance would have changed."
            ),
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
                "from it (and from the batches submitted so far) to reserve capacity. With "
                "--store: the batches the store received before --since.",
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
        one plan on the first issue, asap and carbon_greedy. Inputs are files (--fleet
        --batches --vintages --actuals) or, with --store --since --until, the store's history:
        what did forecast error cost last month, and what would --tolerances have changed.
        Exit codes: 0 done, 1 the committed plan failed its check on the actuals, 2 bad input.
        """
        from scheduler.backtest import backtest

        console = Console(stderr=True)
        files = {
            "--batches": batches,
            "--vintages": vintages,
            "--actuals": actuals,
            "--history": history,
        }
        try:
            _check_mode(store, files, since, until)
            profile = _profile(arrival_period, arrival_periods, reserve)
            if store:
                inputs, earlier = _store_history(fleet, since, until, profile)
            else:
                inputs = _file_inputs(fleet, batches, vintages, actuals)
                earlier = read_batches(history) if history is not None else []
            objs = parse_objectives(objectives, "--objectives") if objectives else None
            with Progress(console=console, transient=True) as bar:
                task = bar.add_task("re-planning", total=None)

                def tick(done: int, total: int) -> None:
                    bar.update(task, completed=done, total=total)

                result = backtest(
                    inputs.fleet,
                    inputs.batches,
                    inputs.vintages,
                    inputs.actual_slots,
                    inputs.actuals,
                    objectives=objs,
                    tolerances=_tolerances(tolerances),
                    step_slots=step_slots(step, inputs.fleet.slot_minutes),
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
        extra = None
        if store:
            extra = {
                "source": "store",
                "since": since,
                "until": until,
                "batches": len(inputs.batches),
                "history_batches": len(earlier),
                "vintages": len(inputs.vintages.issue_times),
                "actual_sources": _actual_sources(inputs.actuals),
            }
        _write_and_show(result, out, plan_out, extra)


def _write_and_show(
    result: BacktestResult, out: Path, plan_out: Path, inputs: dict[str, Any] | None
) -> None:
    """Write result.json (with ``inputs`` when given) and the committed plan; print the table."""
    write_plan(result.committed, plan_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = result.as_json()
    if inputs is not None:
        data["inputs"] = inputs
    out.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
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
    if inputs is not None:
        out_console.print(
            f"store {inputs['since']} - {inputs['until']}: {inputs['batches']} batch parts, "
            f"{inputs['vintages']} forecast vintages; actuals from "
            + "; ".join(
                f"{name} " + ", ".join(f"{origin} {n}" for origin, n in sorted(c.items()))
                for name, c in inputs["actual_sources"].items()
            )
        )
    out_console.print(table)
    if result.validation.ok:
        out_console.print("committed plan re-priced on the actuals: totals match, no violation")
    else:
        for v in result.validation.violations[:20]:
            out_console.print(f"violation: {v}")
    out_console.print(f"wrote {out} and {plan_out}")
    raise typer.Exit(EXIT_OK if result.validation.ok else EXIT_FAILED)
