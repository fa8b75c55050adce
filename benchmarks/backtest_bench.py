"""Backtest benchmark: regret of each strategy against the perfect-knowledge plan.

The scenario is ``benchmarks/scenarios.py``'s (10 sites, real 2022 hourly carbon, price and
water traces, synthetic batches arriving online over the first 60 % of the horizon). Its
signals are the ACTUALS. The forecast vintages are SYNTHETIC: one issue per hour covering the
rest of the horizon, each carbon value the actual times ``exp(e)`` with
``e = sigma(lead) * (a + 0.3 b) / 1.04``, ``sigma(lead) = base + slope * lead_h``, ``a`` fixed
per site and slot (the error every issue shares, which shrinks as the slot nears) and ``b``
fresh per issue; price is the actual (no error). On-site solar can be forecast from REAL data
(``scenarios.solar_forecast``): Solcast's own forecast for the coming hour
(``forecasts/solcast_vessim``), persistence of the latest day known at the issue beyond its 65-minute horizon, with
``--solar forecast``; by default it is the actual (the issue's scenario: carbon error only).
The script prints the measured carbon MAPE by lead time, the solar error, the replay's wall
time and every strategy's regret.

Expected arrivals: the service's strategy reserves capacity for the batches a profile expects
later. Here the scenario is one 48 h cycle, so the profile's period is the horizon and its
history is ``--history-cycles`` EARLIER cycles of the same generator with other seeds (other
batches, same arrival process), shifted back by whole cycles; the replayed night's own batches
are never in the history. ``--sensitivity`` also replays with a history whose batches carry twice and
half tonight's work (a profile wrong by a factor 2), with and without the adaptation to
tonight's arrivals so far (``arrival_ratio``).

Usage::

    python benchmarks/backtest_bench.py                    # 200 batches, 10 sites, 48 h
    python benchmarks/backtest_bench.py --batches 40 --hours 24
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.neso_error import error_at, error_trajectories  # noqa: E402
from benchmarks.scenarios import solar_forecast, write_scenario  # noqa: E402
from scheduler.backtest import backtest, missed_batches, replay  # noqa: E402
from scheduler.contract import build_problem, read_batches, read_forecasts  # noqa: E402
from scheduler.contract.vintages import Vintages  # noqa: E402
from scheduler.domain import Fleet, PlanningBatch, SlotSignal  # noqa: E402
from scheduler.fleet import load_fleet  # noqa: E402
from scheduler.optimizer.arrivals import ArrivalProfile  # noqa: E402
from scheduler.optimizer.validate import price  # noqa: E402

SHARED = ROOT.parent / "shared"


def synthetic_vintages(
    slots: list[datetime],
    actuals: dict[tuple[str, datetime], SlotSignal],
    *,
    base: float,
    slope: float,
    seed: int,
    solar: Callable[[str, int, int], float] | None = None,
    carbon: Callable[[int, int, int], float] | None = None,
) -> Vintages:
    """Hourly issues of the actual carbon with a lead-time-growing error (see the docstring);
    with ``solar`` (``scenarios.solar_forecast``: site, issue hour, slot hour -> kW) the on-site
    solar of each issue is that forecast instead of the actual; with ``carbon`` (site number,
    issue hour, lead hour -> log error, ``neso_error.error_at``) the carbon error is that real
    one instead of the synthetic."""
    rng = random.Random(seed)
    sites = sorted({s for s, _ in actuals})
    shared = {(s, t): rng.gauss(0, 1) for s in sites for t in slots}
    issues: dict[datetime, dict[tuple[str, datetime], SlotSignal]] = {}
    numbers = {s: n for n, s in enumerate(sites)}
    for i, issued in enumerate(slots):
        issue: dict[tuple[str, datetime], SlotSignal] = {}
        for t in slots[i:]:
            lead_h = (t - issued) / timedelta(hours=1)
            sigma = base + slope * lead_h
            for s in sites:
                e = sigma * (shared[(s, t)] + 0.3 * rng.gauss(0, 1)) / 1.04
                if carbon is not None:
                    e = carbon(numbers[s], i, int(lead_h))
                a = actuals[(s, t)]
                kw = a.renewable_kw if solar is None else solar(s, i, i + int(lead_h))
                issue[(s, t)] = dataclasses.replace(
                    a, carbon_g_per_kwh=a.carbon_g_per_kwh * math.exp(e), renewable_kw=kw
                )
        issues[issued] = issue
    return Vintages(60, issues)


def read_night(
    shared: Path, args: argparse.Namespace, seed: int
) -> tuple[Fleet, list[datetime], dict[tuple[str, datetime], SlotSignal], list[PlanningBatch]]:
    """One night of the generator with ``seed``: fleet, slots, actual signals and batches."""
    with tempfile.TemporaryDirectory() as d:
        s = write_scenario(
            shared, Path(d), batches=args.batches, sites=args.sites, hours=args.hours, seed=seed
        )
        fleet = load_fleet(s.fleet)
        slots, actuals = read_forecasts(s.forecasts, fleet)
        return fleet, list(slots), dict(actuals), read_batches(s.batches)


def history_cycles(shared: Path, args: argparse.Namespace, cycles: int) -> list[PlanningBatch]:
    """``cycles`` earlier cycles of the generator (seeds ``seed+1..``), shifted back."""
    out: list[PlanningBatch] = []
    for k in range(1, cycles + 1):
        back = timedelta(hours=k * args.hours)
        for b in read_night(shared, args, args.seed + k)[3]:
            out.append(
                dataclasses.replace(
                    b,
                    id=f"cycle-{k}-{b.id}",
                    submitted_at=b.submitted_at - back,
                    deadline=b.deadline - back,
                )
            )
    return out


def _sized(history: list[PlanningBatch], factor: float) -> list[PlanningBatch]:
    """The history with every batch's work times ``factor`` (a busier or quieter week)."""
    return [
        dataclasses.replace(
            b,
            requests=max(1, round(b.requests * factor)),
            input_tokens=b.input_tokens * factor,
            output_tokens=b.output_tokens * factor,
        )
        for b in history
    ]


def solar_error(v: Vintages, actuals: dict[tuple[str, datetime], SlotSignal]) -> str:
    """Mean absolute error of on-site solar at lead 0 (Solcast) and by 12 h lead band
    (persistence), as kW and as a share of the mean output (a normalised MAE: solar is 0 at
    night, so a per-slot percentage error is undefined)."""
    now: list[float] = []
    bands: dict[int, list[float]] = {}
    for issued in v.issue_times:
        for key, sig in v.issues[issued].items():
            e = abs(sig.renewable_kw - actuals[key].renewable_kw)
            if key[1] == issued:
                now.append(e)
            else:
                bands.setdefault(int((key[1] - issued) / timedelta(hours=12)) * 12, []).append(e)
    mean = statistics.mean(a.renewable_kw for a in actuals.values())
    return (
        f"solar MAE {statistics.mean(now):.2f} kW ({100 * statistics.mean(now) / mean:.0f} % of "
        f"the mean output) for the coming hour (Solcast's forecast); beyond it (persistence of "
        f"the latest day known at the issue) by lead band "
        + ", ".join(
            f"{k}-{k + 11} h {statistics.mean(e):.2f} kW ({100 * statistics.mean(e) / mean:.0f} %)"
            for k, e in sorted(bands.items())
        )
        + f"; mean output {mean:.2f} kW a site"
    )


def mape_by_lead(v: Vintages, actuals: dict[tuple[str, datetime], SlotSignal]) -> dict[int, float]:
    """Mean absolute percentage error of carbon per 12 h lead band."""
    err: dict[int, list[float]] = {}
    for issued in v.issue_times:
        for key, sig in v.issues[issued].items():
            real = actuals[key].carbon_g_per_kwh
            if real > 0:
                band = int((key[1] - issued) / timedelta(hours=12)) * 12
                err.setdefault(band, []).append(abs(sig.carbon_g_per_kwh - real) / real)
    return {k: statistics.mean(v) for k, v in sorted(err.items())}


def _neso(shared: Path) -> Callable[[int, int, int], float]:
    """``(site number, issue hour, lead hour) -> log error`` resampled from NESO's real issues."""
    trajectories = error_trajectories(shared)
    return lambda n, i, lead: error_at(trajectories, n, i, lead)


def main() -> None:
    """Run the benchmark and print its figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--sites", type=int, default=10)
    ap.add_argument("--hours", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--error-base", type=float, default=0.03, help="sigma at lead 0")
    ap.add_argument("--error-slope", type=float, default=0.004, help="sigma added per lead hour")
    ap.add_argument(
        "--solar",
        choices=("forecast", "actual"),
        default="actual",
        help="on-site solar in the vintages: the actuals (the issue's scenario: carbon error "
        "only), or forecast: real Solcast for the coming hour + persistence of the latest day known at the issue",
    )
    ap.add_argument(
        "--carbon",
        choices=("synthetic", "neso"),
        default="synthetic",
        help="carbon error in the vintages: synthetic (--error-base/--error-slope), or neso: "
        "real relative error trajectories of NESO's GB issues by lead time (neso_error.py)",
    )
    ap.add_argument("--history-cycles", type=int, default=3, help="earlier cycles learned from")
    ap.add_argument(
        "--sensitivity",
        action="store_true",
        help="also replay with a history of twice and half tonight's volume, adapted or not",
    )
    args = ap.parse_args()
    fleet, slots, actuals, batches = read_night(SHARED, args, args.seed)
    vintages = synthetic_vintages(
        slots,
        actuals,
        base=args.error_base,
        slope=args.error_slope,
        seed=args.seed,
        solar=solar_forecast(SHARED, args.sites) if args.solar == "forecast" else None,
        carbon=_neso(SHARED) if args.carbon == "neso" else None,
    )
    mape = mape_by_lead(vintages, actuals)
    all_err = statistics.mean(mape.values())
    print(
        f"scenario: {args.sites} sites x {args.hours} h, {len(batches)} batches arriving online; "
        f"{'NESO-RESAMPLED' if args.carbon == 'neso' else 'SYNTHETIC'} carbon forecast error "
        f"(hourly issues), MAPE by lead band "
        + ", ".join(f"{k}-{k + 11} h {100 * v:.1f} %" for k, v in mape.items())
        + f" (mean of bands {100 * all_err:.1f} %)"
    )
    if args.solar == "forecast":
        print(solar_error(vintages, actuals))
    history = history_cycles(SHARED, args, args.history_cycles)
    profile = ArrivalProfile(timedelta(hours=args.hours), args.history_cycles, 1.0)
    started = time.perf_counter()
    result = backtest(fleet, batches, vintages, slots, actuals, arrivals=profile, history=history)
    wall = time.perf_counter() - started
    if args.sensitivity:
        real = build_problem(fleet, slots, actuals, list(batches))
        end = slots[-1] + timedelta(hours=1)
        start = max(slots[0], vintages.issue_times[0])
        best = result.strategies["bound"]["co2_g"]
        runs = {
            "rolling, profile not adapted to tonight": (profile, history, False),
            "rolling, history twice tonight's volume": (profile, _sized(history, 2.0), True),
            "rolling, history half tonight's volume": (profile, _sized(history, 0.5), True),
            "rolling, history twice, not adapted": (profile, _sized(history, 2.0), False),
        }
        for name, (prof, hist, adapt) in runs.items():
            ran, _ = replay(
                fleet,
                batches,
                vintages,
                start,
                end,
                arrivals=dataclasses.replace(prof, adapt=adapt),
                history=hist,
            )
            co2 = price(real, ran).totals.co2_g
            result.strategies[name] = {
                "co2_g": co2,
                "regret_co2": (co2 - best) / best,
                "unplaced": float(len(missed_batches(batches, ran))),
            }
    print(
        f"replay + references: {wall:.1f} s wall, {len(result.decisions)} re-plans; "
        f"reservations learned from {args.history_cycles} earlier cycles ({len(history)} batches)"
    )
    print(
        "committed plan re-priced on the actuals: "
        + ("ok" if result.validation.ok else "; ".join(result.validation.violations[:5]))
    )
    print("| strategy | CO2 (kg) | CO2 above the perfect-knowledge plan | unplaced |")
    print("|---|---|---|---|")
    for name, fig in result.strategies.items():
        print(
            f"| {name} | {fig['co2_g'] / 1000:,.1f} | {100 * fig['regret_co2']:+.2f} % | "
            f"{fig['unplaced']:.0f} |"
        )


if __name__ == "__main__":
    main()
