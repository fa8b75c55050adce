"""Savings per day, per batch and per plan against the asap and carbon_greedy baselines."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from scheduler.domain import Fleet
from scheduler.review.batch_review import (
    actual_totals,
    asap_counterfactual,
    is_estimate,
    saved_split,
)
from scheduler.review.reports import ledger_entries
from scheduler.review.views import PlanSavings, SavingsRow, SavingsView, Totals
from scheduler.store.tables import AssignmentRecord, Batch, LedgerEntry, PlanRecord

BASELINES = ("asap", "carbon_greedy")


def _baseline(raw: Any) -> Totals | None:
    if not isinstance(raw, dict):
        return None
    return Totals(
        co2_g=float(raw.get("co2_g", 0.0)),
        cost=float(raw.get("cost", 0.0)),
        water_l=float(raw.get("water_l", 0.0)),
        energy_kwh=float(raw.get("energy_kwh", 0.0)),
        delay_h=float(raw.get("delay_h", 0.0)),
    )


def _add(a: Totals, b: Totals) -> Totals:
    return Totals(
        co2_g=a.co2_g + b.co2_g,
        cost=a.cost + b.cost,
        water_l=a.water_l + b.water_l,
        energy_kwh=a.energy_kwh + b.energy_kwh,
        delay_h=a.delay_h + b.delay_h,
    )


def _batch_baselines(session: Session, batch_id: str) -> dict[str, Totals | None]:
    """Per-batch baseline totals from the newest plan that placed the batch, if it stored them.

    The planner may store ``baselines[name]["batches"][batch_id] = {co2_g, cost, water_l,
    delay_h}``; plan-wide figures are not split across batches (that would invent numbers).
    """
    plan = session.scalars(
        select(PlanRecord)
        .join(AssignmentRecord, AssignmentRecord.plan_id == PlanRecord.id)
        .where(AssignmentRecord.batch_id == batch_id)
        .order_by(PlanRecord.id.desc())
    ).first()
    out: dict[str, Totals | None] = dict.fromkeys(BASELINES)
    if plan is None:
        return out
    for name in BASELINES:
        raw = plan.baselines.get(name)
        per_batch = raw.get("batches") if isinstance(raw, dict) else None
        if isinstance(per_batch, dict):
            out[name] = _baseline(per_batch.get(batch_id))
    return out


def _plus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b


def _row(
    key: str,
    rows: list[LedgerEntry],
    session: Session,
    submitted: datetime,
    fleet: Fleet | None = None,
    batch_id: str = "",
) -> SavingsRow:
    actual = actual_totals(rows, submitted)
    asap, _ = asap_counterfactual(session, rows, submitted, fleet)
    by_place, by_model = saved_split(session, fleet, batch_id, rows, submitted)
    return SavingsRow(
        key=key,
        actual=actual,
        asap_counterfactual=asap,
        saved_co2_g_vs_asap=asap.co2_g - actual.co2_g,
        saved_co2_g_by_place_and_time=by_place,
        saved_co2_g_by_model_choice=by_model,
        estimated=any(is_estimate(r.energy_method) for r in rows),
    )


def savings_view(
    session: Session,
    start: datetime,
    end: datetime,
    *,
    tenant_id: str | None = None,
    fleet: Fleet | None = None,
) -> SavingsView:
    """Return realised savings per UTC day and per batch, and planned savings per plan.

    Realised savings compare the ledger (what ran) with the same energy run at the batch's
    submission slot at the same site (location-based ``asap`` counterfactual); per-batch
    ``asap``/``carbon_greedy`` planner baselines are shown when the plan stored them. Plans
    created in the range show their planned totals against their stored baselines (admins only:
    plan totals are fleet-wide).

    Args:
        session: an open session.
        start: aware UTC start (inclusive), on ledger ``started_at``.
        end: aware UTC end (exclusive).
        tenant_id: only this tenant's work (``None``: all).
        fleet: the fleet, for the realised like-for-like counterfactual (without it, the
            submission hour's cached intensity re-prices the booked grid energy).
    """
    rows = ledger_entries(session, start, end, tenant_id=tenant_id)
    batch_ids = sorted({r.batch_id for r in rows})
    submitted = {
        b.id: datetime.fromtimestamp(b.created_at, UTC)
        for b in session.scalars(select(Batch).where(Batch.id.in_(batch_ids))).all()
    }
    by_batch: dict[str, list[LedgerEntry]] = defaultdict(list)
    by_day_batch: dict[tuple[str, str], list[LedgerEntry]] = defaultdict(list)
    for r in rows:
        by_batch[r.batch_id].append(r)
        by_day_batch[(r.started_at.date().isoformat(), r.batch_id)].append(r)

    def sub(bid: str) -> datetime:
        return submitted.get(bid) or min(r.started_at for r in by_batch[bid])

    per_batch = []
    for bid in batch_ids:
        row = _row(bid, by_batch[bid], session, sub(bid), fleet, bid)
        base = _batch_baselines(session, bid)
        row.asap, row.carbon_greedy = base["asap"], base["carbon_greedy"]
        per_batch.append(row)

    days: dict[str, SavingsRow] = {}
    for (day, bid), group in sorted(by_day_batch.items()):
        part = _row(day, group, session, sub(bid), fleet, bid)
        if day in days:
            acc = days[day]
            acc.actual = _add(acc.actual, part.actual)
            acc.asap_counterfactual = _add(acc.asap_counterfactual, part.asap_counterfactual)
            acc.saved_co2_g_vs_asap += part.saved_co2_g_vs_asap
            acc.saved_co2_g_by_place_and_time = _plus(
                acc.saved_co2_g_by_place_and_time, part.saved_co2_g_by_place_and_time
            )
            acc.saved_co2_g_by_model_choice = _plus(
                acc.saved_co2_g_by_model_choice, part.saved_co2_g_by_model_choice
            )
            acc.estimated = acc.estimated or part.estimated
        else:
            days[day] = part

    plans: list[PlanSavings] = []
    if tenant_id is None:
        for p in session.scalars(
            select(PlanRecord)
            .where(PlanRecord.created_at >= start, PlanRecord.created_at < end)
            .order_by(PlanRecord.id)
        ).all():
            planned = _baseline(p.totals) or Totals()
            asap, greedy = (
                _baseline(p.baselines.get("asap")),
                _baseline(p.baselines.get("carbon_greedy")),
            )
            plans.append(
                PlanSavings(
                    plan_id=p.id,
                    created_at=p.created_at,
                    planned=planned,
                    asap=asap,
                    carbon_greedy=greedy,
                    saved_co2_g_vs_asap=asap.co2_g - planned.co2_g if asap else None,
                    saved_co2_g_vs_carbon_greedy=greedy.co2_g - planned.co2_g if greedy else None,
                )
            )
    return SavingsView(
        start=start, end=end, per_day=list(days.values()), per_batch=per_batch, plans=plans
    )
