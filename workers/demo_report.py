"""What ``gridshift demo`` prints: the plan and its shifts, the baselines, plan beside booked."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from scheduler.domain import Fleet, SlotSignal
from scheduler.review.units import money, plural, shift_hours, si
from scheduler.store.ledger import ledger_totals
from scheduler.store.tables import AssignmentRecord, Batch, LedgerEntry, PlanRecord

Echo = Callable[[str], None]
SignalLookup = Callable[[str, datetime], "tuple[SlotSignal, str] | None"]
CURRENCY = "(fleet currency)"


def _saving(plan: float, baseline: float) -> str:
    if baseline <= 0:
        return "-"
    return f"{100.0 * (1.0 - plan / baseline):.0f} %"


def planned_benefit(sessions: Any, plan_id: int | None) -> str:
    """The plan's CO2 against its baselines, as the demo's planned-benefit line says it."""
    with sessions() as s:
        plan = s.get(PlanRecord, plan_id) if plan_id else None
    if plan is None:
        return "no plan"
    co2 = plan.totals["co2_g"]
    return ", ".join(f"{_saving(co2, b['co2_g'])} vs {name}" for name, b in plan.baselines.items())


def print_plan(
    echo: Echo,
    sessions: Any,
    jobs: Mapping[str, str],
    plan_id: int | None,
    evening: datetime,
    signals: Mapping[tuple[str, datetime], SlotSignal],
) -> None:
    """The plan made at the evening: where, when and on what each job runs, and what it saves.

    For each assignment the intensity it got is set beside the intensity at the same site in
    the submission hour (running at once), so the shift in time reads as grams saved per kWh.
    """
    with sessions() as s:
        plan = s.get(PlanRecord, plan_id) if plan_id else None
        rows = (
            s.scalars(
                select(AssignmentRecord)
                .where(AssignmentRecord.plan_id == plan_id)
                .order_by(AssignmentRecord.slot_start, AssignmentRecord.site)
            ).all()
            if plan_id
            else []
        )
    if plan is None:
        echo("no plan was made (nothing to place)")
        return
    echo(
        f"\nplan {plan.id} ({plan.status}, solved in {plan.solve_s:.2f} s, objectives "
        f"{' > '.join(plan.objectives)}); every figure below is ESTIMATED from the model profiles"
    )
    echo(
        f"  {'job':<18} {'requests':>8}  {'runs (UTC)':<10} {'site':<13} {'model':<15}"
        f" {'g/kWh':>5} {'at 18:00':>8}  shift"
    )
    moved = 0
    for a in rows:
        at_once = signals.get((a.site, evening))
        hours = (a.slot_start - evening).total_seconds() / 3600
        moved += a.requests if hours >= 1 else 0
        slot_signal = signals.get((a.site, a.slot_start))
        solar = ", on-site solar" if slot_signal and slot_signal.renewable_kw > 0 else ""
        echo(
            f"  {jobs.get(a.batch_id, a.batch_id):<18} {a.requests:>8}  "
            f"{a.slot_start:%a %H:%M}  {a.site:<13} {a.model:<15} "
            f"{a.carbon_g_per_kwh or 0:>5.0f} "
            f"{at_once.carbon_g_per_kwh if at_once else 0:>8.0f}  {shift_hours(hours)}{solar}"
        )
    placed = sum(a.requests for a in rows)
    echo(
        f"  {moved} of {plural(placed, 'request')} moved away from the submission hour; "
        f"{len({a.site for a in rows})} of the fleet's sites used"
    )
    for u in plan.unplaced:
        echo(f"  unplaced: {jobs.get(u['batch'], u['batch'])}: {u['reason']}")
    totals = plan.totals
    echo("\nplanned benefit: the plan against its baselines (location-based CO2, ESTIMATED):")
    echo(f"  {'':<14} {'CO2':>10} {'cost':>16} {'water':>10} {'delay':>8}  CO2 the plan saves")
    echo(
        f"  {'this plan':<14} {si(totals['co2_g'], 'g'):>10} "
        f"{money(totals['cost']):>16} {si(totals['water_l'], 'L'):>10} "
        f"{totals['delay_h']:>7.1f}h"
    )
    for name, b in plan.baselines.items():
        echo(
            f"  {name:<14} {si(b['co2_g'], 'g'):>10} {money(b['cost']):>16} "
            f"{si(b['water_l'], 'L'):>10} {b['delay_h']:>7.1f}h  "
            f"{_saving(totals['co2_g'], b['co2_g'])}"
        )
    echo(
        "  (cost in the fleet's currency; asap runs the largest allowed model at once, "
        "carbon_greedy the smallest on the lowest grid intensity, one batch at a time and blind "
        "to on-site solar)"
    )


def print_outcome(
    echo: Echo,
    sessions: Any,
    jobs: Mapping[str, str],
    plan_id: int | None,
    shards_run: int,
    wall_s: float,
    forecast_note: str = "",
) -> int:
    """What ran and what the ledger booked, beside what the plan expected, per job.

    ``forecast_note`` (printed under the table) says how the plan's forecast differed from
    the actuals the ledger booked, if it did.

    Returns:
        0 when every batch completed, 1 otherwise.
    """
    with sessions() as s:
        batches = [s.get(Batch, batch_id) for batch_id in jobs]
        per_job = {batch_id: ledger_totals(s, batch_id=batch_id) for batch_id in jobs}
        planned_tokens = {
            batch_id: s.execute(
                select(AssignmentRecord.input_tokens, AssignmentRecord.output_tokens).where(
                    AssignmentRecord.batch_id == batch_id, AssignmentRecord.plan_id == plan_id
                )
            ).all()
            for batch_id in jobs
        }
        total = ledger_totals(s)
    label = "ESTIMATED: no energy counter here" if total.estimated else "measured"
    echo(f"\nran {plural(shards_run, 'shard')}, booked in the ledger ({label}):")
    echo(
        f"  {'job':<18} {'status':<10} {'done':>9}  {'energy plan/booked':>21}  "
        f"{'CO2 plan/booked':>21}  tokens plan/run"
    )
    for batch in batches:
        assert batch is not None
        t = per_job[batch.id]
        plan_tokens = round(sum(i + o for i, o in planned_tokens[batch.id]))
        done = f"{batch.request_completed}/{batch.request_total}"
        echo(
            f"  {jobs[batch.id]:<18} {batch.status:<10} {done:>9}  "
            f"{si(t.planned_energy_kwh, 'kWh'):>10} {si(t.facility_energy_kwh, 'kWh'):>10}  "
            f"{si(t.planned_co2_g, 'g'):>10} {si(t.co2_g, 'g'):>10}  "
            f"{plan_tokens:,}/{t.input_tokens + t.output_tokens:,}"
        )
        files = [f"output {batch.output_file_id}"] if batch.output_file_id else []
        if batch.error_file_id:
            files.append(f"errors {batch.error_file_id}")
        if batch.request_failed:
            files.append(plural(batch.request_failed, "failed request"))
        if files:
            echo(f"  {'':<18} {', '.join(files)}")
    echo(
        "  both sides are estimates from the same pricing and model profiles, so they differ only "
        "where the tokens do: the plan guesses them (prompt characters / 4, max_tokens x the "
        "model's expected output fraction), the ledger books the tokens the run read and wrote "
        "(the tiny model's 512-token vocabulary reads about 2 characters per token); a shard "
        "that books more energy than planned keeps its planned on-site solar share of it, as "
        "far as the slot's solar has energy left after the shards booked before it; the rest "
        "is booked from the grid"
    )
    if forecast_note:
        echo(f"  {forecast_note}")
    market = "n/a" if total.co2_market_g is None else si(total.co2_market_g, "g")
    echo(
        f"ledger totals: IT energy {si(total.it_energy_kwh, 'kWh')}, facility "
        f"{si(total.facility_energy_kwh, 'kWh')} of which on-site solar "
        f"{si(total.renewable_kwh, 'kWh')}; CO2 location-based {si(total.co2_location_g, 'g')} "
        f"(market-based {market}, embodied {si(total.embodied_co2_g, 'g')}); water "
        f"{si(total.water_l, 'L')}; cost {money(total.cost, CURRENCY)}"
    )
    echo(f"demo finished in {wall_s:.1f} s (time compressed: the night's slots ran back to back)")
    return 0 if all(b is not None and b.status == "completed" for b in batches) else 1


def print_realised(
    echo: Echo,
    sessions: Any,
    jobs: Mapping[str, str],
    fleet: Fleet,
    lookup: SignalLookup | None,
    planned_benefit: str,
) -> None:
    """Realised savings on the night's actuals, per job and in total, split "by place and time"
    and "by model choice", with the plan's benefit beside it, labelled
    (``scheduler.review.realised.realised_split``: the same work run at once at the same site,
    priced on the same actuals, factor type and resolution, with the submission hour's own
    solar, succeeded requests only; once on the model it ran and once on asap's model)."""
    from scheduler.review.realised import asap_for_batch, realised_split

    echo(
        "\nrealised savings on the night's actuals (booked against the same work run at once, "
        "same site, the submission hour's own solar; succeeded requests only):"
    )
    echo(
        f"  {'job':<18} {'booked CO2':>12} {'run at once':>12} {'saved':>12} "
        f"{'asap model':>12} {'model saved':>12}"
    )
    booked_sum = same_sum = asap_sum = 0.0
    changes: set[tuple[str, str]] = set()
    with sessions() as s:
        for batch_id, name in jobs.items():
            batch = s.get(Batch, batch_id)
            rows = list(s.scalars(select(LedgerEntry).where(LedgerEntry.batch_id == batch_id)))
            if batch is None or not rows:
                continue
            submitted = datetime.fromtimestamp(batch.created_at, UTC)
            asap = asap_for_batch(s, fleet, batch_id)
            split = realised_split(s, fleet, rows, submitted, asap, lookup)
            booked, same, other = (
                split.booked.co2_g,
                split.at_once.co2_g,
                split.at_once_asap_model.co2_g,
            )
            booked_sum, same_sum, asap_sum = booked_sum + booked, same_sum + same, asap_sum + other
            changes |= set(split.model_changes)
            echo(
                f"  {name:<18} {si(booked, 'g'):>12} {si(same, 'g'):>12} "
                f"{_saving(booked, same):>12} {si(other, 'g'):>12} {_saving(same, other):>12}"
            )
    echo(
        f"  {'realised':<18} {si(booked_sum, 'g'):>12} {si(same_sum, 'g'):>12} "
        f"{_saving(booked_sum, same_sum):>12}  by time at the site it ran (same model; "
        "location-based)"
    )
    echo(
        f"  by place and time: {si(same_sum - booked_sum, 'g')} saved "
        f"({_saving(booked_sum, same_sum)} of the same work run at once on the model it ran)"
    )
    moved = ", ".join(f"{b} instead of asap's {a}" for a, b in sorted(changes)) or "none"
    echo(
        f"  by model choice: {si(asap_sum - same_sum, 'g')} saved "
        f"({_saving(same_sum, asap_sum)} of the work run at once on asap's model; models: {moved})"
    )
    echo(f"  planned benefit (the plan's ESTIMATE against its baselines): {planned_benefit}")
