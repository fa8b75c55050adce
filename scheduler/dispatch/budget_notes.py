"""The plan's budget notes after placement: the fleet's budget state once the work this plan
places today is counted, beside the state it was planned under (``BudgetStates.notes``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from scheduler.dispatch.budget import FLEET_SCOPE, BudgetStates, committed_co2_g, day_limited
from scheduler.domain import Assignment, Fleet
from scheduler.optimizer.budget import budget_state
from scheduler.pricing import PricedPiece
from scheduler.store.ledger import spent_g
from scheduler.store.tables import CarbonPacing


def planned_today_g(
    assignments: Sequence[Assignment], priced: Sequence[PricedPiece], now: datetime
) -> float:
    """Planned CO2 (g, booking's factor type) of the assignments in slots starting today (UTC)."""
    today = now.astimezone(UTC).date()
    return math.fsum(
        p.co2_g
        for a, p in zip(assignments, priced, strict=True)
        if a.slot.astimezone(UTC).date() == today
    )


def after_placement_notes(
    s: Session, fleet: Fleet, now: datetime, states: BudgetStates, planned_g: float
) -> list[str]:
    """``carbon budget state (fleet) after this plan: STATE (N % of today's target left ...)``.

    Today's target is the pacer's (``day_limited``); what is left after this plan is the target
    less the CO2 booked today, the planned CO2 of queued and running shards (before this plan
    writes its own) and ``planned_g``, the CO2 this plan places in today's slots. Nothing
    without a fleet budget or a pacing row for today.
    """
    if fleet.carbon_budget is None or states.fleet is None:
        return []
    today = now.astimezone(UTC).date()
    row = s.scalars(
        select(CarbonPacing).where(
            CarbonPacing.scope == FLEET_SCOPE, CarbonPacing.day == today.isoformat()
        )
    ).first()
    if row is None:
        return []
    target = day_limited(fleet.carbon_budget, max(0.0, row.budget_g))
    if target <= 0:
        return []
    midnight = datetime(today.year, today.month, today.day, tzinfo=UTC)
    spent = spent_g(s, midnight, midnight + timedelta(days=1))
    left = target - spent - committed_co2_g(s) - planned_g
    state = budget_state(left, target)
    return [
        f"carbon budget state (fleet) after this plan: {state.value} ({left / target * 100:.0f} % "
        f"of today's target left after the CO2 booked today, queued and running, and "
        f"{planned_g:.4g} g this plan places today); planned under: {states.fleet.value}"
    ]
