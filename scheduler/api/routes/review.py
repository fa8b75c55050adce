"""Operations review endpoints: plans, schedule, batch review, savings, budget, accuracy, ledger, reports."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Response

from scheduler.api.deps import FleetDep, SessionDep, TenantDep
from scheduler.review.accuracy import accuracy_view
from scheduler.review.batch_review import batch_review
from scheduler.review.budget_view import budget_view
from scheduler.review.reports import ReportFormat, ledger_entries, ledger_row, render_report
from scheduler.review.savings import savings_view
from scheduler.review.schedule import check_range, current_plan, plan_versions, schedule_view
from scheduler.review.views import (
    AccuracyView,
    BatchReview,
    BudgetView,
    CurrentPlan,
    LedgerPage,
    PlanVersions,
    SavingsView,
    ScheduleView,
)
from scheduler.store.tenants import Caller

router = APIRouter(prefix="/v1", tags=["review"])
# Savings, ledger and reports look back a week by default; the schedule 12 h back, 36 h ahead.
REPORT_BEFORE = timedelta(days=7)
REPORT_AFTER = timedelta(days=1)

From = Annotated[
    datetime | None, Query(alias="from", description="Start, ISO-8601 with timezone (UTC).")
]
To = Annotated[datetime | None, Query(alias="to", description="End (exclusive), ISO-8601.")]


def scope_of(caller: Caller) -> str | None:
    """The tenant a caller may see: ``None`` for an admin key (everything)."""
    return None if caller.is_admin else caller.tenant_id


@router.get("/plans", response_model=PlanVersions, summary="Plan versions, newest first")
def list_plans(
    session: SessionDep, caller: TenantDep, limit: int = Query(50, ge=1, le=500)
) -> PlanVersions:
    """Stored plan versions (totals, baselines, status); the current one is flagged."""
    return plan_versions(session, limit=limit, tenant_id=scope_of(caller))


@router.get("/plans/current", response_model=CurrentPlan, summary="The plan in force")
def get_current_plan(session: SessionDep, caller: TenantDep) -> CurrentPlan:
    """Assignments of the current plan the caller may see, with their slots' signals."""
    return current_plan(session, tenant_id=scope_of(caller))


@router.get("/schedule", response_model=ScheduleView, summary="Gantt data")
def get_schedule(
    session: SessionDep, caller: TenantDep, fleet: FleetDep, start: From = None, end: To = None
) -> ScheduleView:
    """One bar per shard (and per assignment not yet cut), each fleet site's signals, and now."""
    lo, hi = check_range(start, end)
    pools = [(s.name, p.name) for s in fleet.sites for p in s.pools] if fleet else []
    slot_minutes = fleet.slot_minutes if fleet else None
    return schedule_view(
        session, lo, hi, tenant_id=scope_of(caller), pools=pools, slot_minutes=slot_minutes
    )


@router.get("/batches/{batch_id}/review", response_model=BatchReview, summary="Batch review")
def get_batch_review(
    batch_id: str, session: SessionDep, caller: TenantDep, fleet: FleetDep
) -> BatchReview:
    """Where and when the batch's shards ran and why; energy, CO2, water, cost; plan vs actual."""
    return batch_review(session, batch_id, tenant_id=scope_of(caller), fleet=fleet)


@router.get("/savings", response_model=SavingsView, summary="Savings against baselines")
def get_savings(
    session: SessionDep, caller: TenantDep, fleet: FleetDep, start: From = None, end: To = None
) -> SavingsView:
    """Realised savings per day and per batch (like for like; see ``caveat``), planned per plan."""
    lo, hi = check_range(start, end, before=REPORT_BEFORE, after=REPORT_AFTER)
    return savings_view(session, lo, hi, tenant_id=scope_of(caller), fleet=fleet)


@router.get("/budget", response_model=BudgetView, summary="Carbon budget")
def get_budget(session: SessionDep, fleet: FleetDep, caller: TenantDep) -> BudgetView:
    """Carbon budget used and left today and this month, its state and the pacing price."""
    return budget_view(session, fleet=fleet, tenant_id=scope_of(caller))


@router.get("/forecasts/accuracy", response_model=AccuracyView, summary="Forecast accuracy")
def get_accuracy(
    session: SessionDep,
    caller: TenantDep,
    site: str | None = None,
    start: From = None,
    end: To = None,
) -> AccuracyView:
    """Forecast against actual carbon intensity per site, with MAE and MAPE."""
    lo, hi = check_range(start, end, before=REPORT_BEFORE, after=REPORT_AFTER)
    return accuracy_view(session, lo, hi, site=site)


@router.get("/ledger", response_model=LedgerPage, summary="Ledger rows")
def get_ledger(
    session: SessionDep, caller: TenantDep, start: From = None, end: To = None
) -> LedgerPage:
    """Ledger rows (one per execution attempt) that started in the range, oldest first."""
    lo, hi = check_range(start, end, before=REPORT_BEFORE, after=REPORT_AFTER)
    rows = ledger_entries(session, lo, hi, tenant_id=scope_of(caller))
    return LedgerPage(data=[ledger_row(r) for r in rows], count=len(rows))


@router.get(
    "/reports/emissions",
    summary="Emissions report",
    responses={200: {"content": {"text/csv": {}, "application/json": {}}}},
)
def get_emissions_report(
    session: SessionDep,
    fleet: FleetDep,
    caller: TenantDep,
    start: From = None,
    end: To = None,
    format: ReportFormat = ReportFormat.JSON,
) -> Response:
    """CodeCarbon-compatible ``emissions.csv``, JSON totals with GHG scope 2, or an ESRS E1 summary."""
    lo, hi = check_range(start, end, before=REPORT_BEFORE, after=REPORT_AFTER)
    rows = ledger_entries(session, lo, hi, tenant_id=scope_of(caller))
    text, media = render_report(rows, format, lo, hi, fleet=fleet, session=session)
    headers = {}
    if format is ReportFormat.CSV:
        headers["Content-Disposition"] = 'attachment; filename="emissions.csv"'
    return Response(content=text, media_type=media, headers=headers)
