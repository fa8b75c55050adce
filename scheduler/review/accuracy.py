"""Forecast accuracy: cached forecast against measured actual carbon intensity, MAE and MAPE."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from scheduler.review.signals import SIGNAL_NAMES, keys_of, site_of
from scheduler.review.views import AccuracyPoint, AccuracyView, SiteAccuracy
from scheduler.store.tables import ForecastPoint


def accuracy_view(
    session: Session, start: datetime, end: datetime, *, site: str | None = None
) -> AccuracyView:
    """Compare forecast and actual carbon intensity per site and slot over ``[start, end)``.

    For each slot the forecast is the newest forecast fetched at or before the slot started
    (what the planner could have known; the newest overall when none was fetched before), and
    the actual the newest actual. MAPE skips slots whose actual is 0.

    Args:
        session: an open session.
        start: aware UTC start (inclusive).
        end: aware UTC end (exclusive).
        site: one site (``None``: every site with both kinds of points).
    """
    q = select(ForecastPoint).where(
        ForecastPoint.signal.in_(SIGNAL_NAMES["carbon_g_per_kwh"]),
        ForecastPoint.time >= start,
        ForecastPoint.time < end,
    )
    if site is not None:
        q = q.where(keys_of([site]))
    forecasts: dict[tuple[str, datetime], ForecastPoint] = {}
    actuals: dict[tuple[str, datetime], ForecastPoint] = {}
    for p in session.scalars(q).all():
        k = (site_of(p.key), p.time)
        if p.kind == "actual":
            if k not in actuals or p.fetched_at > actuals[k].fetched_at:
                actuals[k] = p
            continue
        old = forecasts.get(k)
        ahead, old_ahead = p.fetched_at <= p.time, old is not None and old.fetched_at <= old.time
        if (
            old is None
            or (ahead and not old_ahead)
            or (ahead == old_ahead and p.fetched_at > old.fetched_at)
        ):
            forecasts[k] = p
    sites: dict[str, list[AccuracyPoint]] = {}
    for k in sorted(set(forecasts) & set(actuals)):
        sites.setdefault(k[0], []).append(
            AccuracyPoint(time=k[1], forecast=forecasts[k].value, actual=actuals[k].value)
        )
    out = []
    for name, points in sorted(sites.items()):
        errors = [abs(p.forecast - p.actual) for p in points]
        pct = [abs(p.forecast - p.actual) / abs(p.actual) for p in points if p.actual != 0]
        out.append(
            SiteAccuracy(
                site=name,
                points=points,
                mae_g_per_kwh=sum(errors) / len(errors) if errors else None,
                mape_pct=100.0 * sum(pct) / len(pct) if pct else None,
            )
        )
    return AccuracyView(start=start, end=end, sites=out)
