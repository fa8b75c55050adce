"""The service's expected arrivals: reservations learned from the batches it received.

``build_problem`` adds them to every re-plan (``PlanningProblem.reserved``), so work known now
does not take the clean capacity that tonight's recurring jobs will need. The profile is daily:
the batches received over the last ``GRIDSHIFT_ARRIVAL_HISTORY_DAYS`` days, each expected
again at the same time of day with the same window, sites and model, weighted
``GRIDSHIFT_ARRIVAL_RESERVE / days`` (``scheduler.optimizer.arrivals``; ``gridshift backtest``
calls the same function with the same clock rule).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from scheduler.config import Settings
from scheduler.domain import PlanningBatch
from scheduler.optimizer.arrivals import ArrivalProfile
from scheduler.store.part_rows import part_rows, planning_batch
from scheduler.store.tables import Batch


def arrival_profile(settings: Settings) -> ArrivalProfile | None:
    """The service's profile (daily), or None when reservations are off."""
    if settings.arrival_history_days <= 0 or settings.arrival_reserve <= 0:
        return None
    return ArrivalProfile(
        period=timedelta(hours=24),
        periods=settings.arrival_history_days,
        scale=settings.arrival_reserve,
    )


def received(s: Session, since: datetime, until: datetime) -> list[PlanningBatch]:
    """Every batch part received in ``[since, until)`` as a planning batch (any status)."""
    rows = s.execute(
        part_rows().where(
            Batch.created_at >= since.timestamp(), Batch.created_at < until.timestamp()
        )
    ).all()
    return [planning_batch(r) for r in rows if r.requests > 0]


def history_before(s: Session, profile: ArrivalProfile, at: datetime) -> list[PlanningBatch]:
    """What ``profile`` learns from at ``at``: the parts received in its periods before it."""
    return received(s, at - profile.periods * profile.period, at)


def expected_arrivals(
    s: Session, settings: Settings, now: datetime, horizon_end: datetime, slot_minutes: int
) -> tuple[PlanningBatch, ...]:
    """The reservations of a re-plan at ``now`` (empty when off or without history)."""
    profile = arrival_profile(settings)
    if profile is None:
        return ()
    return profile.reserve(history_before(s, profile, now), now, horizon_end, slot_minutes)
