"""``gridshift profiles``: model profiles workers measured against those fleet.yaml configures."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from scheduler.commands.common import exit_on_error, print_json
from scheduler.config import get_settings


def _fmt(value: float | None, spec: str = ".3g") -> str:
    return "-" if value is None else format(value, spec)


def register(app: typer.Typer) -> None:
    """Mount ``profiles`` on ``app``."""

    @app.command()
    def profiles(
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Show measured against configured profiles per model and GPU type (from the ledger).

        time: observed busy GPU-seconds / the profile's for the same tokens. energy: measured IT
        energy / the profile's (measured rows only; estimates are the profile by definition).
        With GRIDSHIFT_CALIBRATED_PROFILES=true the planner uses the calibrated profile wherever
        there are enough attempts.
        """
        from scheduler.commands.review import store_session
        from scheduler.fleet import load_fleet
        from scheduler.optimizer.calibration import MIN_ATTEMPTS, calibrations
        from scheduler.samples import load_sample_fleet
        from scheduler.store.profiles import observed_profiles

        settings = get_settings()
        with exit_on_error():
            fleet = load_fleet(settings.fleet) if settings.fleet else load_sample_fleet()
            with store_session() as s:
                found = calibrations(fleet, observed_profiles(s, fleet))
        rows: list[dict[str, Any]] = [
            {
                "model": c.model,
                "gpu": c.gpu,
                "attempts": c.observed.attempts,
                "measured_attempts": c.observed.measured_attempts,
                "tokens": c.observed.input_tokens + c.observed.output_tokens,
                "observed_tok_s": c.observed_tok_s,
                "time_ratio": c.time_ratio,
                "observed_j_per_token": c.observed_j_per_token,
                "configured_j_per_token": c.configured_j_per_token,
                "energy_ratio": c.energy_ratio,
                "configured": {
                    "prefill_tok_s": c.configured.prefill_tok_s,
                    "decode_tok_s": c.configured.decode_tok_s,
                    "power_w": c.configured.power_w,
                },
                "calibrated": {
                    "prefill_tok_s": c.calibrated.prefill_tok_s,
                    "decode_tok_s": c.calibrated.decode_tok_s,
                    "power_w": c.calibrated.power_w,
                },
                "enough_evidence": c.enough,
            }
            for c in found
        ]
        if as_json:
            print_json(
                {
                    "calibrated_profiles_in_use": settings.calibrated_profiles,
                    "min_attempts": MIN_ATTEMPTS,
                    "profiles": rows,
                }
            )
            return
        console = Console()
        if not rows:
            console.print("no attempts booked yet: nothing measured to compare with fleet.yaml")
            return
        table = Table(box=box.SIMPLE_HEAVY)
        for name in (
            "model",
            "gpu",
            "attempts",
            "measured",
            "tok/s seen",
            "time x",
            "J/token seen",
            "J/token profile",
            "energy x",
            "calibrated",
        ):
            table.add_column(name)
        for r in rows:
            cal = r["calibrated"]
            table.add_row(
                r["model"],
                r["gpu"],
                str(r["attempts"]),
                str(r["measured_attempts"]),
                _fmt(r["observed_tok_s"]),
                _fmt(r["time_ratio"]),
                _fmt(r["observed_j_per_token"]),
                _fmt(r["configured_j_per_token"]),
                _fmt(r["energy_ratio"]),
                (
                    f"{cal['prefill_tok_s']:.4g}/{cal['decode_tok_s']:.4g} tok/s, "
                    f"{cal['power_w']:.4g} W"
                    if r["enough_evidence"]
                    else f"as configured (< {MIN_ATTEMPTS} attempts)"
                ),
            )
        console.print(table)
        use = "uses" if settings.calibrated_profiles else "does not use"
        console.print(
            f"the planner {use} calibrated profiles (GRIDSHIFT_CALIBRATED_PROFILES); energy x "
            "compares measured rows only: estimated rows are the profile by definition"
        )
