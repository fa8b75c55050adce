"""Carbon budget used and left (today, this month), its state and the pacing price."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from scheduler.domain import BudgetState, CarbonBudget, Fleet
from scheduler.optimizer.budget import budget_state as optimizer_budget_state
from scheduler.review.views import BudgetPeriod, BudgetView
from scheduler.store.ledger import spent_g
from scheduler.store.tables import CarbonPacing, Tenant, now_utc

FLEET_SCOPES = ("fleet", "global", "*")


def budget_state(left_fraction: float | None) -> BudgetState:
    """The state of a share of budget left (``scheduler.optimizer.budget.budget_state``).

    ``None`` (no budget set) is NORMAL.
    """
    if left_fraction is None:
        return BudgetState.NORMAL
    return optimizer_budget_state(left_fraction, 1.0)


def _period(name: str, start: datetime, budget_g: float | None, used_g: float) -> BudgetPeriod:
    if budget_g is None or budget_g <= 0:
        return BudgetPeriod(
            period=name,
            start=start,
            budget_g=budget_g,
            used_g=used_g,
            left_g=None,
            left_fraction=None,
            state=None,
        )
    left = budget_g - used_g
    frac = max(0.0, left / budget_g)
    return BudgetPeriod(
        period=name,
        start=start,
        budget_g=budget_g,
        used_g=used_g,
        left_g=left,
        left_fraction=frac,
        state=budget_state(frac).value,
        breached=used_g > budget_g,
        overspent_g=max(0.0, used_g - budget_g),
    )


def _configured(session: Session, fleet: Fleet | None, tenant_id: str | None) -> CarbonBudget:
    if fleet is None:
        return CarbonBudget()
    if tenant_id is None:
        return fleet.carbon_budget or CarbonBudget()
    tenant = session.get(Tenant, tenant_id)
    for key in (tenant_id, tenant.name if tenant else None):
        if key is not None and key in fleet.tenant_budgets:
            return fleet.tenant_budgets[key]
    return CarbonBudget()


def budget_view(
    session: Session,
    *,
    fleet: Fleet | None = None,
    tenant_id: str | None = None,
    now: datetime | None = None,
) -> BudgetView:
    """Return the carbon budget used and left today and this month (UTC), and its state.

    Used carbon is booked location-based operational plus embodied CO2 (the planner's
    ``carbon``). Today's budget is the pacer's ``budget_g`` for today when it has a row (the
    target planning obeys), else ``carbon_budget.g_per_day`` of ``fleet.yaml`` (or the
    tenant's own); the month's is ``g_per_month``.
    The state follows the tighter of the two periods.

    Args:
        session: an open session.
        fleet: the fleet (for configured budgets); ``None`` uses the pacer rows only.
        tenant_id: a tenant's budget (``None``: the fleet's).
        now: the clock (default: now).
    """
    now = now or now_utc()
    day0 = datetime(now.year, now.month, now.day, tzinfo=UTC)
    month0 = datetime(now.year, now.month, 1, tzinfo=UTC)
    next_month = (month0 + timedelta(days=32)).replace(day=1)
    scopes: tuple[str, ...] = FLEET_SCOPES if tenant_id is None else (tenant_id,)
    if tenant_id is not None:
        tenant = session.get(Tenant, tenant_id)
        if tenant is not None:
            scopes += (tenant.name, f"tenant:{tenant_id}")
    pacing = session.scalars(
        select(CarbonPacing)
        .where(CarbonPacing.scope.in_(scopes), CarbonPacing.day <= day0.date().isoformat())
        .order_by(CarbonPacing.day.desc(), CarbonPacing.updated_at.desc())
    ).first()
    cfg = _configured(session, fleet, tenant_id)
    day_budget = cfg.g_per_day
    if pacing is not None and pacing.day == day0.date().isoformat():
        # the pacer's target for today is what planning obeys, never above the daily limit
        day_budget = (
            pacing.budget_g if cfg.g_per_day is None else min(pacing.budget_g, cfg.g_per_day)
        )
    today = _period(
        "today", day0, day_budget, spent_g(session, day0, day0 + timedelta(days=1), tenant_id)
    )
    month = _period(
        "month", month0, cfg.g_per_month, spent_g(session, month0, next_month, tenant_id)
    )
    fracs = [p.left_fraction for p in (today, month) if p.left_fraction is not None]
    return BudgetView(
        scope=tenant_id or "fleet",
        today=today,
        month=month,
        state=budget_state(min(fracs) if fracs else None).value,
        breached=[p.period for p in (today, month) if p.breached],
        pacing_price_per_g=pacing.price_per_g if pacing else None,
        pacing_day=pacing.day if pacing else None,
    )
