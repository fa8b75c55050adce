"""Signals for dispatch: the planning horizon's forecasts and the slot a shard really ran in."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from scheduler.domain import Fleet, SlotSignal
from scheduler.forecasts.base import ACTUAL, CARBON, FORECAST, PRICE, SOLAR, cache_key
from scheduler.forecasts.cache import load_points
from scheduler.store.tables import AssignmentRecord

log = logging.getLogger(__name__)

SignalLookup = Callable[[str, datetime], "tuple[SlotSignal, str] | None"]
"""(site, slot start) -> (signal, source label) or None; injected by the demo and tests."""

HorizonSignals = Callable[
    [Fleet, tuple[datetime, ...], datetime], Mapping[tuple[str, datetime], SlotSignal]
]
"""(fleet, slots, now) -> signals[(site, slot)] for every site and slot."""


def _cached(
    session: Session, fleet: Fleet, site_name: str, kind: str, slot: datetime
) -> tuple[float, str] | None:
    """Mean cached value of one signal over the slot, preferring actuals to forecasts."""
    site = fleet.site(site_name)
    source = site.signals.get(kind)
    if source is None:
        return None
    key = cache_key(site.name, source.options)
    end = slot + timedelta(minutes=fleet.slot_minutes)
    for point_kind in (ACTUAL, FORECAST):
        points = load_points(session, source.provider, key, kind, point_kind, slot, end)
        if points:
            return sum(points.values()) / len(points), point_kind
    return None


def ledger_signal(
    session: Session,
    fleet: Fleet,
    site: str,
    slot: datetime,
    assignment: AssignmentRecord | None,
    *,
    lookup: SignalLookup | None = None,
) -> tuple[SlotSignal, str]:
    """The signals to book an attempt with, and where the carbon figure came from.

    Order: the injected ``lookup`` (demo: the planned slot's sample signals); else the forecast
    cache for the slot the attempt ran in, actual before forecast (``carbon_source`` is
    ``actual`` or ``forecast``); else the plan's own figures for the assignment (``plan``:
    its carbon intensity, and its cost per facility kWh as price; no renewables).
    """
    if lookup is not None:
        found = lookup(site, slot)
        if found is not None:
            return found
    carbon = _cached(session, fleet, site, CARBON, slot)
    price = _cached(session, fleet, site, PRICE, slot)
    solar = _cached(session, fleet, site, SOLAR, slot)
    planned_carbon = assignment.carbon_g_per_kwh if assignment else None
    planned_price = (
        assignment.cost / assignment.energy_kwh if assignment and assignment.energy_kwh > 0 else 0.0
    )
    if carbon is not None:
        carbon_value, source = carbon
    elif planned_carbon is not None:
        carbon_value, source = planned_carbon, "plan"
    else:
        carbon_value, source = 0.0, "unknown"
        log.warning("no carbon intensity for %s at %s: booked as 0 (source unknown)", site, slot)
    signal = SlotSignal(
        time=slot,
        site=site,
        carbon_g_per_kwh=carbon_value,
        price_per_kwh=price[0] if price else planned_price,
        renewable_kw=solar[0] if solar else 0.0,
        source=source,
    )
    return signal, source
