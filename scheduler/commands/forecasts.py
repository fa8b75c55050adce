"""``gridshift forecasts``: write ``forecasts.csv`` from the fleet's providers (or synthetic)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from scheduler.cli import EXIT_FAILED, EXIT_USAGE
from scheduler.clock import now_utc
from scheduler.config import get_settings
from scheduler.errors import ConfigError, ForecastUnavailable


def _slots(start: datetime, hours: int, slot_minutes: int) -> list[datetime]:
    step = timedelta(minutes=slot_minutes)
    midnight = start.replace(hour=0, minute=0, second=0, microsecond=0)
    first = midnight + ((start - midnight) // step) * step
    return [first + i * step for i in range(int(timedelta(hours=hours) / step))]


def register(app: typer.Typer) -> None:
    """Mount ``forecasts`` on ``app``."""

    @app.command("forecasts")
    def forecasts_command(
        out: Annotated[Path, typer.Option("--out", help="Where to write forecasts.csv.")],
        fleet: Annotated[
            Path | None,
            typer.Option("--fleet", help="fleet.yaml (default: GRIDSHIFT_FLEET or the sample)."),
        ] = None,
        hours: Annotated[int, typer.Option(help="Horizon length in hours.", min=1)] = 24,
        start: Annotated[
            str | None,
            typer.Option(help="First slot, ISO-8601 UTC (default: the current slot)."),
        ] = None,
        synthetic: Annotated[
            bool, typer.Option("--synthetic", help="Write SYNTHETIC shapes; ask no provider.")
        ] = False,
        retries: Annotated[int, typer.Option(help="HTTP retries per provider call.", min=0)] = 1,
    ) -> None:
        """Collect signals for every site and slot and write them as ``forecasts.csv``.

        Fallbacks (stale cache, persistence, a source's fallback provider) are reported on
        stderr. Exit codes: 0 written, 1 a signal could not be had, 2 bad input.
        """
        from scheduler.fleet import load_fleet
        from scheduler.forecasts import build_registry, collect_signals, write_forecasts_csv
        from scheduler.forecasts.synthetic import synthetic_signals
        from scheduler.samples import sample_fleet_path

        settings = get_settings()
        try:
            path = fleet or settings.fleet or sample_fleet_path()
            parsed = load_fleet(path)
            first = datetime.fromisoformat(start).astimezone(UTC) if start else now_utc()
        except (ConfigError, ValueError) as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(EXIT_USAGE) from None
        slots = _slots(first, hours, parsed.slot_minutes)
        if synthetic:
            signals = list(synthetic_signals(parsed, slots[0], hours).values())
            typer.echo("note: SYNTHETIC signals (source=synthetic), not a forecast", err=True)
        else:
            registry = build_registry(settings, base_dir=Path(path).parent, retries=retries)
            try:
                result = collect_signals(parsed, slots, registry=registry, now=now_utc())
            except ForecastUnavailable as e:
                typer.echo(f"error: {e}", err=True)
                raise typer.Exit(EXIT_FAILED) from None
            for note in result.notes:
                typer.echo(f"fallback: {note}", err=True)
            signals = list(result.signals.values())
        write_forecasts_csv(signals, out, with_source=True)
        typer.echo(
            f"wrote {len(signals)} rows ({len(slots)} slots x {len(parsed.sites)} sites) to {out}"
        )
