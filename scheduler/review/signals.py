"""Reading cached site signals (``forecast_points``) for the review: actuals first, then forecasts."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from scheduler.review.views import SignalPoint, SiteSignals
from scheduler.store.tables import AssignmentRecord, ForecastPoint, LedgerEntry

# forecast_points.signal names accepted for each field. The cache key is the site name, or
# "site|{options}" as scheduler.forecasts.base.cache_key writes it.
SIGNAL_NAMES: dict[str, tuple[str, ...]] = {
    "carbon_g_per_kwh": ("carbon", "carbon_g_per_kwh", "carbon_intensity"),
    "price_per_kwh": ("price", "price_per_kwh"),
    "renewable_kw": ("solar", "renewable", "renewable_kw", "solar_kw"),
}
_FIELD_OF = {name: field for field, names in SIGNAL_NAMES.items() for name in names}
_KIND_RANK = {"actual": 2, "forecast": 1}
LOOKBACK = timedelta(hours=6)


def site_of(key: str) -> str:
    """The site name of a ``forecast_points.key`` (``site`` or ``site|{options}``)."""
    return key.split("|", 1)[0]


def keys_of(sites: Iterable[str]) -> ColumnElement[bool]:
    """A filter on ``forecast_points.key`` matching the cache keys of ``sites``."""
    clauses: list[ColumnElement[bool]] = []
    for s in sites:
        clauses += [ForecastPoint.key == s, ForecastPoint.key.like(f"{s}|%")]
    return or_(*clauses)


def _best(rows: Iterable[ForecastPoint]) -> dict[tuple[str, str, datetime], tuple[float, str]]:
    """Pick one value per (site, field, time): an actual beats a forecast, newer beats older.

    Returns ``(value, kind)`` with ``kind`` ``actual`` or ``forecast``, so every figure shown
    says which it is.
    """
    chosen: dict[tuple[str, str, datetime], tuple[int, datetime, float, str]] = {}
    for r in rows:
        field = _FIELD_OF.get(r.signal)
        if field is None:
            continue
        k = (site_of(r.key), field, r.time)
        rank = (_KIND_RANK.get(r.kind, 0), r.fetched_at, r.value, r.kind)
        if k not in chosen or rank[:2] > chosen[k][:2]:
            chosen[k] = rank
    return {k: (v[2], v[3]) for k, v in chosen.items()}


def site_signals(
    session: Session, sites: Iterable[str], start: datetime, end: datetime
) -> list[SiteSignals]:
    """Return each site's carbon, price and renewable series over ``[start, end)``.

    Args:
        session: an open session.
        sites: site names.
        start: first time (aware UTC).
        end: end of the axis (exclusive).

    Returns:
        One ``SiteSignals`` per site, points in time order (sites without data get no points).
    """
    names = sorted(set(sites))
    if not names:
        return []
    rows = session.scalars(
        select(ForecastPoint).where(
            keys_of(names),
            ForecastPoint.signal.in_(list(_FIELD_OF)),
            ForecastPoint.time >= start,
            ForecastPoint.time < end,
        )
    ).all()
    best = _best(rows)
    by_site: dict[str, dict[datetime, SignalPoint]] = {s: {} for s in names}
    for (site, field, time), (value, kind) in best.items():
        point = by_site[site].setdefault(time, SignalPoint(time=time))
        setattr(point, field, value)
        if field == "carbon_g_per_kwh" or point.kind is None:
            point.kind = kind
    out = []
    for s in names:
        if by_site[s]:
            out.append(SiteSignals(site=s, points=[by_site[s][t] for t in sorted(by_site[s])]))
        else:
            out.append(booked_signals(session, s, start, end))
    return out


def booked_signals(session: Session, site: str, start: datetime, end: datetime) -> SiteSignals:
    """A site's signals from what was planned and booked there, for sites with nothing cached.

    Planned slots give the plan's carbon intensity and its cost per kWh; ledger rows (which win)
    their booked intensity and cost per grid kWh. Renewables are unknown (``None``).
    """
    points: dict[datetime, SignalPoint] = {}
    for a in session.scalars(
        select(AssignmentRecord)
        .where(
            AssignmentRecord.site == site,
            AssignmentRecord.slot_start >= start,
            AssignmentRecord.slot_start < end,
        )
        .order_by(AssignmentRecord.plan_id)
    ).all():
        points[a.slot_start] = SignalPoint(
            time=a.slot_start,
            kind="forecast",
            carbon_g_per_kwh=a.carbon_g_per_kwh,
            price_per_kwh=a.cost / a.energy_kwh if a.energy_kwh > 0 else None,
        )
    for r in session.scalars(
        select(LedgerEntry).where(
            LedgerEntry.site == site, LedgerEntry.started_at >= start, LedgerEntry.started_at < end
        )
    ).all():
        # Book the row on the planned slot it started in (the latest one before it, same day).
        earlier = [t for t in points if t <= r.started_at < t + timedelta(days=1)]
        time = max(earlier) if earlier else r.started_at
        points[time] = SignalPoint(
            time=time,
            kind="actual",
            carbon_g_per_kwh=r.carbon_g_per_kwh,
            price_per_kwh=r.cost / r.grid_kwh if r.grid_kwh > 0 else None,
        )
    return SiteSignals(site=site, points=[points[t] for t in sorted(points)], source="booked")


def signal_at(session: Session, site: str, field: str, when: datetime) -> float | None:
    """Return the value of ``field`` for the slot holding ``when`` at ``site`` (``None`` if unknown).

    The slot is the latest cached point at or before ``when`` (within six hours).

    Args:
        session: an open session.
        site: site name.
        field: ``carbon_g_per_kwh``, ``price_per_kwh`` or ``renewable_kw``.
        when: aware UTC time.
    """
    rows = session.scalars(
        select(ForecastPoint).where(
            keys_of([site]),
            ForecastPoint.signal.in_(SIGNAL_NAMES[field]),
            ForecastPoint.time <= when,
            ForecastPoint.time > when - LOOKBACK,
        )
    ).all()
    best = _best(rows)
    if not best:
        return None
    latest = max(k[2] for k in best)
    return best[(site, field, latest)][0]
