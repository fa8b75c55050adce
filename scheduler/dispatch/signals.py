"""Signals for dispatch: the planning horizon's forecasts and the slot a shard really ran in."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from scheduler.domain import CarbonFactor, Fleet, SlotSignal
from scheduler.forecasts.base import ACTUAL, CARBON, FORECAST, PRICE, SOLAR, WUE, cache_key
from scheduler.forecasts.cache import load_points
from scheduler.store.tables import AssignmentRecord

log = logging.getLogger(__name__)

SignalLookup = Callable[[str, datetime], "tuple[SlotSignal, str] | None"]
"""(site, slot start) -> (signal, source label) or None; injected by the demo and tests."""

HorizonSignals = Callable[
    [Fleet, tuple[datetime, ...], datetime], Mapping[tuple[str, datetime], SlotSignal]
]
"""(fleet, slots, now) -> signals[(site, slot)] for every site and slot."""

PERSISTENCE_DAYS = 14
"""How far back booking looks for the same time of day when a slot has no signal."""

ZONE_AVERAGE_G_PER_KWH = 480.0
"""Last-resort average grid intensity (world average of 2023, Ember's Global Electricity
Review 2024), used only when a site has no signal, no persistence and no configured
``average_carbon_g_per_kwh``; every row booked with it says so (``signal_fallback``)."""


@dataclass(frozen=True, slots=True)
class BookingSignal:
    """The signal a ledger row is booked with, where its carbon figure came from, and why.

    Attributes:
        signal: carbon, price, renewables and WUE of the slot (``carbon_factor`` included).
        source: ``actual``, ``plan``, ``forecast``, ``persistence``, ``site-factor``,
            ``zone-average`` or a label from an injected lookup.
        fallback: None when the carbon figure is first-hand (actual, plan, forecast or lookup);
            else the fallback used (``persistence``, ``site-factor``, ``zone-average``).
        average_g_per_kwh: an average factor for location-based scope 2 when ``signal`` is
            marginal (None when the signal is average already).
        average_fallback: where that average came from, when it is a fallback.
    """

    signal: SlotSignal
    source: str
    fallback: str | None = None
    average_g_per_kwh: float | None = None
    average_fallback: str | None = None


def _provider_key(fleet: Fleet, site_name: str, kind: str) -> tuple[str, str, str] | None:
    from scheduler.forecasts.service import ALIASES, site_source

    site = fleet.site(site_name)
    source = site_source(site, kind)
    if source is None:
        return None
    name = ALIASES.get(source.provider, source.provider)
    return name, cache_key(site.name, source.options), str(source.options.get("factor_type", ""))


def _cached(
    session: Session, fleet: Fleet, site_name: str, kind: str, slot: datetime, point_kind: str
) -> float | None:
    """Mean cached value of one signal over the slot (``actual`` or ``forecast`` points)."""
    found = _provider_key(fleet, site_name, kind)
    if found is None:
        return None
    provider, key, _ = found
    end = slot + timedelta(minutes=fleet.slot_minutes)
    points = load_points(session, provider, key, kind, point_kind, slot, end)
    return sum(points.values()) / len(points) if points else None


def _persisted(
    session: Session, fleet: Fleet, site_name: str, kind: str, slot: datetime
) -> float | None:
    """The same time of day on the latest earlier day with a cached value (14 days back).

    Two queries (actual and forecast points of the 14 days before), whatever the gap.
    """
    found = _provider_key(fleet, site_name, kind)
    if found is None:
        return None
    provider, key, _ = found
    step = timedelta(minutes=fleet.slot_minutes)
    lo = slot - timedelta(days=PERSISTENCE_DAYS)
    actual = load_points(session, provider, key, kind, ACTUAL, lo, slot)
    forecast = load_points(session, provider, key, kind, FORECAST, lo, slot)
    for days in range(1, PERSISTENCE_DAYS + 1):
        start = slot - timedelta(days=days)
        for points in (actual, forecast):
            values = [v for t, v in points.items() if start <= t < start + step]
            if values:
                return sum(values) / len(values)
    return None


def carbon_factor_of_site(fleet: Fleet, site_name: str) -> str:
    """The factor type of a site's configured carbon source (average direct without one)."""
    from scheduler.forecasts.base import carbon_factor_of
    from scheduler.forecasts.service import ALIASES, site_source

    source = site_source(fleet.site(site_name), CARBON)
    if source is None:
        return CarbonFactor.AVERAGE_DIRECT.value
    return carbon_factor_of(ALIASES.get(source.provider, source.provider), source.options)


def _average_fallback(fleet: Fleet, site_name: str) -> tuple[float, str]:
    configured = fleet.site(site_name).average_carbon_g_per_kwh
    if configured is not None:
        return configured, "site-factor"
    return ZONE_AVERAGE_G_PER_KWH, "zone-average"


def _planned_signal(
    assignment: AssignmentRecord | None, site: str, slot: datetime
) -> SlotSignal | None:
    """The signal the plan priced this assignment with, when the attempt ran in its slot."""
    if (
        assignment is None
        or assignment.carbon_g_per_kwh is None
        or assignment.site != site
        or assignment.slot_start != slot
    ):
        return None
    price = assignment.price_per_kwh
    if price is None:  # a plan stored before prices were kept: its cost per grid kWh
        grid = assignment.grid_kwh or assignment.energy_kwh
        price = assignment.cost / grid if grid else 0.0
    return SlotSignal(
        time=slot,
        site=site,
        carbon_g_per_kwh=assignment.carbon_g_per_kwh,
        price_per_kwh=price,
        renewable_kw=assignment.renewable_kw or 0.0,
        wue_l_per_kwh=assignment.wue_l_per_kwh,
        source="plan",
        carbon_factor=assignment.carbon_factor or CarbonFactor.AVERAGE_DIRECT.value,
    )


def ledger_signal(
    session: Session,
    fleet: Fleet,
    site: str,
    slot: datetime,
    assignment: AssignmentRecord | None,
    *,
    lookup: SignalLookup | None = None,
) -> BookingSignal:
    """The signals to book an attempt with: never a zero from a missing signal.

    Carbon, in order: the injected ``lookup`` (demo: the planned slot's sample signals); the
    actual cached for the slot it ran in; the signal the plan used, when it ran in its planned
    slot; the forecast cached for that slot; persistence (the same time of day on the latest
    of the 14 days before, from the cache); the site's ``average_carbon_g_per_kwh``; the zone
    average ``ZONE_AVERAGE_G_PER_KWH``. The last three are fallbacks and the row says which.
    Price, renewables and WUE follow the same order (actual, plan, forecast, persistence; no
    renewables and the site's WUE when nothing is known).

    A marginal carbon signal is kept for the avoided-emissions estimate, and an average factor
    (site factor, else zone average, labelled) is found for location-based scope 2.
    """
    if lookup is not None:
        found = lookup(site, slot)
        if found is not None:
            return BookingSignal(found[0], found[1])
    planned = _planned_signal(assignment, site, slot)

    def pick(kind: str, planned_value: float | None) -> tuple[float | None, str | None]:
        actual = _cached(session, fleet, site, kind, slot, ACTUAL)
        if actual is not None:
            return actual, "actual"
        if planned_value is not None:
            return planned_value, "plan"
        forecast = _cached(session, fleet, site, kind, slot, FORECAST)
        if forecast is not None:
            return forecast, "forecast"
        persisted = _persisted(session, fleet, site, kind, slot)
        return (persisted, "persistence") if persisted is not None else (None, None)

    carbon, source = pick(CARBON, planned.carbon_g_per_kwh if planned else None)
    fallback = "persistence" if source == "persistence" else None
    factor = (
        planned.carbon_factor
        if planned is not None and source == "plan"
        else carbon_factor_of_site(fleet, site)
    )
    if carbon is None or source is None:
        carbon, source = _average_fallback(fleet, site)
        fallback, factor = source, CarbonFactor.AVERAGE_DIRECT.value
        log.warning(
            "no carbon intensity for %s at %s: booked with the %s fallback %.1f g/kWh",
            site,
            slot,
            source,
            carbon,
        )
    price, _ = pick(PRICE, planned.price_per_kwh if planned else None)
    solar, _ = pick(SOLAR, planned.renewable_kw if planned else None)
    wue, _ = pick(WUE, planned.wue_l_per_kwh if planned else None)
    signal = SlotSignal(
        time=slot,
        site=site,
        carbon_g_per_kwh=carbon,
        price_per_kwh=price or 0.0,
        renewable_kw=max(0.0, solar or 0.0),
        wue_l_per_kwh=wue,
        source=source,
        fallback=fallback is not None,
        carbon_factor=factor,
    )
    average, average_fallback = None, None
    if factor == CarbonFactor.MARGINAL.value:
        average, average_fallback = _average_fallback(fleet, site)
    return BookingSignal(signal, source, fallback, average, average_fallback)
