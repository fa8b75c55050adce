"""Carbon-budget breaches: days whose booked CO2 exceeded the day's budget (an event, not only a
negative ``left_g``): the budget view's ``breached``, the metric
``gridshift_budget_breaches_total`` and the reports' ``budget_breaches`` all read this."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from scheduler.store.ledger import spent_g
from scheduler.store.tables import CarbonPacing


@dataclass(frozen=True, slots=True)
class Breach:
    """One day over its carbon budget (grams, location-based + embodied)."""

    scope: str
    day: str
    budget_g: float
    spent_g: float

    @property
    def overspent_g(self) -> float:
        """Booked CO2 above the budget, g."""
        return self.spent_g - self.budget_g

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly, with ``overspent_g``."""
        return {**asdict(self), "overspent_g": self.overspent_g}


def breached_days(s: Session, start: date | None = None, end: date | None = None) -> list[Breach]:
    """Days in ``[start, end)`` whose spend exceeded the pacer's budget for them.

    A closed day uses the spend the pacer booked on its row; a day not yet closed (today) the
    ledger's spend so far (fleet scope only: tenant rows are closed by their own pacer).
    """
    q = select(CarbonPacing).order_by(CarbonPacing.day, CarbonPacing.scope)
    if start is not None:
        q = q.where(CarbonPacing.day >= start.isoformat())
    if end is not None:
        q = q.where(CarbonPacing.day < end.isoformat())
    out = []
    for row in s.scalars(q):
        spent = row.spent_g
        if row.scope == "fleet" and spent == 0.0:  # not closed yet: the ledger so far
            d = date.fromisoformat(row.day)
            day0 = datetime(d.year, d.month, d.day, tzinfo=UTC)
            spent = spent_g(s, day0, day0 + timedelta(days=1))
        if spent > row.budget_g:
            out.append(Breach(row.scope, row.day, row.budget_g, spent))
    return out
