"""Carbon budget in the service: budget states per fleet and tenant, and the daily pacer close."""

from __future__ import annotations

import calendar
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from scheduler.domain import BudgetState, CarbonBudget, Fleet, PlanningBatch, ShardStatus
from scheduler.optimizer.budget import (
    PacerState,
    allowed_models_for,
    budget_state,
    close_day,
    daily_target_g,
    should_defer,
)
from scheduler.store.db import transaction
from scheduler.store.ledger import spent_g
from scheduler.store.tables import AssignmentRecord, CarbonPacing, Shard, Tenant

log = logging.getLogger(__name__)

FLEET_SCOPE = "fleet"
_ORDER = (
    BudgetState.NORMAL,
    BudgetState.TIGHTENING,
    BudgetState.RESTRICTED,
    BudgetState.CRITICAL,
)


def _day_start(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


def month_budget_g(budget: CarbonBudget, day: date) -> float | None:
    """The month's budget ``B`` in grams: ``g_per_month``, else ``g_per_day x days in month``."""
    if budget.g_per_month is not None and budget.g_per_month > 0:
        return budget.g_per_month
    if budget.g_per_day is not None and budget.g_per_day > 0:
        return budget.g_per_day * calendar.monthrange(day.year, day.month)[1]
    return None


def day_limited(budget: CarbonBudget, target_g: float) -> float:
    """The pacer's daily target within the configured daily limit: both limits hold.

    With ``g_per_day`` and ``g_per_month`` both set, today's budget is the lower of the month's
    pacing target and ``g_per_day`` (the daily limit was never applied before).
    """
    if budget.g_per_day is not None and budget.g_per_day > 0:
        return min(target_g, budget.g_per_day)
    return target_g


def _pacing(s: Session, day: date) -> CarbonPacing | None:
    return s.scalars(
        select(CarbonPacing).where(
            CarbonPacing.scope == FLEET_SCOPE, CarbonPacing.day == day.isoformat()
        )
    ).first()


def _first_day(s: Session, month_of: date) -> date | None:
    """The first day of ``month_of``'s month with a fleet pacing row (when the pacer started)."""
    month0 = month_of.replace(day=1)
    first = s.scalars(
        select(CarbonPacing.day)
        .where(CarbonPacing.scope == FLEET_SCOPE, CarbonPacing.day >= month0.isoformat())
        .order_by(CarbonPacing.day)
    ).first()
    return date.fromisoformat(first) if first and first[:7] == month0.isoformat()[:7] else None


def _pacer_from(
    s: Session, budget: CarbonBudget, start: date, day: date, price_per_g: float
) -> PacerState | None:
    """The pacer of ``day``'s month, started on ``start``, just before ``day`` closes.

    The month's budget is prorated to the days from ``start`` to the month's end (a service
    started mid-month does not inherit the days before it), and the spend is the ledger's.
    """
    month_g = month_budget_g(budget, day)
    if month_g is None:
        return None
    days = calendar.monthrange(day.year, day.month)[1]
    active = days - start.day + 1
    return PacerState(
        month_budget_g=month_g * active / days,
        days_in_month=active,
        day=(day - start).days,
        spent_g=spent_g(s, _day_start(start), _day_start(day)),
        price_per_g=price_per_g,
    )


def advance_pacer(factory: sessionmaker[Session], fleet: Fleet, now: datetime) -> bool:
    """Close yesterday and store today's fleet pacing row, once per UTC day (idempotent).

    When today has no ``carbon_pacing`` row (scope ``fleet``): yesterday's spend (ledger,
    location-based plus embodied) is booked on yesterday's row (if any) and the monthly pacer
    is rebuilt from the ledger and stepped with ``close_day``; today's row gets
    ``budget_g = daily_target_g`` and the new ``price_per_g``. The month's budget is prorated
    to the days from the pacer's first row in the month (its first day: ``B / D``, i.e.
    ``g_per_day`` when only that is set); on the 1st of a month a new month starts with the
    carried price. Only the day before today is closed: after a gap the price takes one step.

    Args:
        factory: session factory.
        fleet: the fleet (``carbon_budget`` gives the month's budget).
        now: the dispatcher's clock.

    Returns:
        True when this call wrote today's row.
    """
    if fleet.carbon_budget is None:
        return False
    today = now.astimezone(UTC).date()
    if month_budget_g(fleet.carbon_budget, today) is None:
        return False
    yesterday = today - timedelta(days=1)
    try:
        with transaction(factory) as s:
            if _pacing(s, today) is not None:
                return False
            prev = _pacing(s, yesterday)
            last = s.scalars(
                select(CarbonPacing)
                .where(CarbonPacing.scope == FLEET_SCOPE, CarbonPacing.day < today.isoformat())
                .order_by(CarbonPacing.day.desc())
            ).first()
            spent_yesterday = spent_g(s, _day_start(yesterday), _day_start(today))
            started = _first_day(s, yesterday)
            closed = None
            if started is not None:
                before = _pacer_from(
                    s, fleet.carbon_budget, started, yesterday, last.price_per_g if last else 0.0
                )
                closed = close_day(before, spent_yesterday) if before else None
            if prev is not None:
                prev.spent_g = spent_yesterday
                prev.updated_at = now
            price = closed.price_per_g if closed else (last.price_per_g if last else 0.0)
            # A new month, or the pacer's first day: the pacer starts from today.
            state = (
                closed
                if closed is not None and today.day != 1
                else _pacer_from(s, fleet.carbon_budget, today, today, price)
            )
            if state is None:
                return False
            target = day_limited(fleet.carbon_budget, max(0.0, daily_target_g(state)))
            s.add(
                CarbonPacing(
                    scope=FLEET_SCOPE,
                    day=today.isoformat(),
                    budget_g=target,
                    spent_g=0.0,
                    price_per_g=state.price_per_g,
                    updated_at=now,
                )
            )
    except IntegrityError:  # another dispatcher wrote today's row first
        return False
    log.info(
        "carbon pacer: closed %s (spent %.0f g); %s target %.0f g at %.3g per g",
        yesterday,
        spent_yesterday,
        today,
        target,
        state.price_per_g,
    )
    return True


def _share(budget_g: float | None, used_g: float) -> float | None:
    return (budget_g - used_g) / budget_g if budget_g and budget_g > 0 else None


def _state_of(share: float | None) -> BudgetState | None:
    return budget_state(share, 1.0) if share is not None else None


def _tighter(*states: BudgetState | None) -> BudgetState | None:
    known = [st for st in states if st is not None]
    return max(known, key=_ORDER.index) if known else None


def _lowest(*shares: float | None) -> float | None:
    known = [x for x in shares if x is not None]
    return min(known) if known else None


def period_left_share(
    s: Session,
    budget: CarbonBudget,
    now: datetime,
    *,
    tenant_id: str | None = None,
    day_budget_g: float | None = None,
) -> float | None:
    """The lower of the day's and the month's share of budget left (``None``: no budget set).

    The share is 1.0 when nothing is spent and negative when overspent; its state
    (``budget_state(share, 1.0)``) is the tighter of the day's and the month's.

    Args:
        s: an open session.
        budget: the configured budget (fleet's or a tenant's).
        now: the clock.
        tenant_id: count only this tenant's ledger entries.
        day_budget_g: today's budget if not ``budget.g_per_day`` (the pacer's target).
    """
    day0 = _day_start(now.astimezone(UTC).date())
    month0 = day0.replace(day=1)
    next_month = (month0 + timedelta(days=32)).replace(day=1)
    day_g = day_budget_g if day_budget_g is not None else budget.g_per_day
    day_share = _share(day_g, spent_g(s, day0, day0 + timedelta(days=1), tenant_id))
    month_share = (
        _share(budget.g_per_month, spent_g(s, month0, next_month, tenant_id))
        if budget.g_per_month
        else None
    )
    return _lowest(day_share, month_share)


def period_state(
    s: Session,
    budget: CarbonBudget,
    now: datetime,
    *,
    tenant_id: str | None = None,
    day_budget_g: float | None = None,
) -> BudgetState | None:
    """The tighter of the day's and the month's budget state (``None``: no budget set).

    Args: as ``period_left_share``.
    """
    return _state_of(
        period_left_share(s, budget, now, tenant_id=tenant_id, day_budget_g=day_budget_g)
    )


@dataclass
class BudgetStates:
    """Budget states for one plan: the fleet's and each budgeted tenant's (by tenant id).

    ``fleet_left``/``tenants_left`` hold the share of budget left behind each state (1.0 =
    nothing spent), when known.
    """

    fleet: BudgetState | None = None
    tenants: dict[str, BudgetState] = field(default_factory=dict)
    fleet_left: float | None = None
    tenants_left: dict[str, float] = field(default_factory=dict)

    def for_batch(self, batch: PlanningBatch) -> BudgetState | None:
        """The tighter of the fleet's and the batch's tenant's state."""
        return _tighter(self.fleet, self.tenants.get(batch.tenant or ""))

    def left_for_batch(self, batch: PlanningBatch) -> float | None:
        """The lower of the fleet's and the batch's tenant's share of budget left."""
        return _lowest(self.fleet_left, self.tenants_left.get(batch.tenant or ""))

    def notes(self) -> list[str]:
        """Plan notes describing the states (shown with the plan)."""
        out = []
        if self.fleet is not None:
            out.append(f"carbon budget state (fleet): {self.fleet.value}")
        out += [
            f"carbon budget state (tenant {t}): {st.value}"
            for t, st in sorted(self.tenants.items())
        ]
        return out


def budget_states(s: Session, fleet: Fleet, now: datetime) -> BudgetStates:
    """Current budget states of the fleet (pacer target for today if stored) and tenants.

    Tenant budgets in ``fleet.tenant_budgets`` are keyed by tenant name or id.
    """
    out = BudgetStates()
    if fleet.carbon_budget is not None:
        row = _pacing(s, now.astimezone(UTC).date())
        out.fleet_left = period_left_share(
            s, fleet.carbon_budget, now, day_budget_g=row.budget_g if row else None
        )
        out.fleet = _state_of(out.fleet_left)
    if fleet.tenant_budgets:
        keys = list(fleet.tenant_budgets)
        for t in s.scalars(select(Tenant).where((Tenant.name.in_(keys)) | (Tenant.id.in_(keys)))):
            budget = fleet.tenant_budgets.get(t.id) or fleet.tenant_budgets[t.name]
            share = period_left_share(s, budget, now, tenant_id=t.id)
            if share is not None:
                out.tenants[t.id] = budget_state(share, 1.0)
                out.tenants_left[t.id] = share
    return out


def quality_ceilings(
    batches: Sequence[PlanningBatch], states: BudgetStates, fleet: Fleet
) -> Mapping[str, float]:
    """Per-batch quality ceilings the states impose on ``min_quality`` (``"auto"``) batches.

    A batch naming its model is never restricted. The ceiling is the highest quality among
    ``allowed_models_for(state, ...)``; batches left unrestricted get no entry.
    """
    out: dict[str, float] = {}
    for b in batches:
        state = states.for_batch(b)
        if b.min_quality is None or state is None or state is BudgetState.NORMAL:
            continue
        wide = [m for m in fleet.models if m.holds(b.max_request_tokens)]
        allowed = set(allowed_models_for(state, wide, b.min_quality))
        if allowed:
            out[b.id] = max(m.quality for m in fleet.models if m.name in allowed)
    return out


DEFERRED_REASON_PREFIX = "deferred: carbon budget"


def defer_parts(
    batches: Sequence[PlanningBatch], states: BudgetStates, horizon_end: datetime
) -> tuple[list[PlanningBatch], list[dict[str, str]]]:
    """Hold back ``"auto"`` parts that can wait while their budget is CRITICAL (``should_defer``).

    A part whose ``min_quality`` is set, whose (fleet or tenant) state is CRITICAL and whose
    deadline lies after ``horizon_end`` is left out of the plan; it is planned again by a later
    re-plan (every slot boundary re-plans), once the budget allows or its deadline enters the
    horizon. Parts naming their model are never deferred.

    Args:
        batches: the planning parts.
        states: the budget states of this plan.
        horizon_end: end of the planning horizon (aware UTC).

    Returns:
        ``(kept, deferred)``: the parts to plan, and ``{"batch": part id, "reason": ...}``
        records for the plan's ``unplaced`` (reason starts with ``DEFERRED_REASON_PREFIX``).
    """
    kept: list[PlanningBatch] = []
    deferred: list[dict[str, str]] = []
    for b in batches:
        state = states.for_batch(b)
        if b.min_quality is None or state is None or not should_defer(b, state, horizon_end):
            kept.append(b)
            continue
        left = max(0.0, states.left_for_batch(b) or 0.0)
        deferred.append(
            {
                "batch": b.id,
                "reason": f"{DEFERRED_REASON_PREFIX} {state.value.upper()} ({left * 100:.0f} % left); "
                "will be planned when the budget allows or before its deadline",
            }
        )
    return kept, deferred


def committed_co2_g(s: Session) -> float:
    """Planned CO2 of queued and running shards (their assignments' figures, pro rata), g."""
    rows = s.execute(
        select(Shard.request_count, AssignmentRecord.requests, AssignmentRecord.co2_g)
        .join(AssignmentRecord, AssignmentRecord.id == Shard.assignment_id)
        .where(Shard.status.in_([ShardStatus.QUEUED.value, ShardStatus.RUNNING.value]))
    ).all()
    return math.fsum(co2 * n / total for n, total, co2 in rows if total)


def carbon_caps(
    s: Session, fleet: Fleet, now: datetime, horizon_end: datetime
) -> tuple[dict[date, float] | None, float]:
    """(carbon cap per UTC day of a new plan's horizon in g, pacer price per g).

    Each day's target is the pacer's (today's ``carbon_pacing`` row, written by
    ``advance_pacer`` for day-only, month-only and combined budgets alike, never above
    ``g_per_day``). Today gets what is left of it after the CO2 booked today and the planned CO2
    of queued and running work; each further day the horizon reaches into gets the target, so
    no day borrows from another's. No budget (or no pacing row yet): no cap.
    """
    pacing = _pacing(s, now.astimezone(UTC).date())
    price = pacing.price_per_g if pacing else 0.0
    if fleet.carbon_budget is None or pacing is None:
        return None, price
    target = day_limited(fleet.carbon_budget, max(0.0, pacing.budget_g))
    today = now.astimezone(UTC).date()
    midnight = _day_start(today)
    spent = spent_g(s, midnight, midnight + timedelta(days=1))
    caps = {today: max(0.0, target - spent - committed_co2_g(s))}
    for i in range(1, max(0, (horizon_end - midnight - timedelta(seconds=1)).days) + 1):
        caps[today + timedelta(days=i)] = target
    return caps, price


def carbon_cap(
    s: Session, fleet: Fleet, now: datetime, horizon_end: datetime
) -> tuple[float | None, float]:
    """(the horizon's carbon cap in g: the sum of ``carbon_caps``, pacer price per g)."""
    caps, price = carbon_caps(s, fleet, now, horizon_end)
    return (None if caps is None else math.fsum(caps.values())), price
