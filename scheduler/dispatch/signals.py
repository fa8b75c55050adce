"""Signals for dispatch: the planning horizon's forecasts and the slot a shard really ran in."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

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
        signal: carbon, price, renewables and WUE of the slot (``carbon_factor`` and the
            provenance fields included).
        source: ``actual``, ``plan``, ``forecast``, ``persistence``, ``site-factor``,
            ``zone-average`` or a label from an injected lookup.
        fallback: None when the carbon figure is first-hand; else the fallback used
            (``fallback-provider``, ``cache``, ``persistence``, ``site-factor``,
            ``zone-average``): a plan made on a fallback signal books its fallback too.
        average_g_per_kwh: an average direct factor for location-based scope 2 when
            ``signal`` is marginal or lifecycle (None when the signal is average direct).
        average_fallback: where that average came from, when it is a fallback.
        price_fallback: None for a first-hand price; ``persistence`` or ``fallback-provider``;
            ``no-price`` when no price is known (cost booked 0, labelled and counted).
    """

    signal: SlotSignal
    source: str
    fallback: str | None = None
    average_g_per_kwh: float | None = None
    average_fallback: str | None = None
    price_fallback: str | None = None


@dataclass(frozen=True, slots=True)
class _Key:
    provider: str
    key: str
    options: Mapping[str, Any]
    fallback: bool  # the source's ``fallback`` provider, not the configured one


def _provider_keys(fleet: Fleet, site_name: str, kind: str) -> list[_Key]:
    """Cache keys of a site's signal: the configured provider's, then its fallback provider's
    (booking finds the signal the planner used, whichever of them supplied it)."""
    from scheduler.forecasts.service import ALIASES, fallback_source, site_source

    site = fleet.site(site_name)
    source = site_source(site, kind)
    if source is None:
        return []
    keys = [
        _Key(
            ALIASES.get(source.provider, source.provider),
            cache_key(site.name, source.options),
            source.options,
            False,
        )
    ]
    fb = fallback_source(source)
    if fb is not None:
        name = ALIASES.get(fb.provider, fb.provider)
        keys.append(_Key(name, cache_key(site.name, fb.options), fb.options, True))
    return keys


def _cached(
    session: Session, fleet: Fleet, site_name: str, kind: str, slot: datetime, point_kind: str
) -> tuple[float, _Key] | None:
    """Mean cached value of one signal over the slot (``actual`` or ``forecast`` points), and
    the provider it came from."""
    end = slot + timedelta(minutes=fleet.slot_minutes)
    for found in _provider_keys(fleet, site_name, kind):
        points = load_points(session, found.provider, found.key, kind, point_kind, slot, end)
        if points:
            return sum(points.values()) / len(points), found
    return None


def _persisted(
    session: Session, fleet: Fleet, site_name: str, kind: str, slot: datetime
) -> tuple[float, _Key] | None:
    """The same time of day on the latest earlier day with a cached value (14 days back).

    Two queries per provider (actual and forecast points of the 14 days before).
    """
    step = timedelta(minutes=fleet.slot_minutes)
    lo = slot - timedelta(days=PERSISTENCE_DAYS)
    for found in _provider_keys(fleet, site_name, kind):
        actual = load_points(session, found.provider, found.key, kind, ACTUAL, lo, slot)
        forecast = load_points(session, found.provider, found.key, kind, FORECAST, lo, slot)
        for days in range(1, PERSISTENCE_DAYS + 1):
            start = slot - timedelta(days=days)
            for points in (actual, forecast):
                values = [v for t, v in points.items() if start <= t < start + step]
                if values:
                    return sum(values) / len(values), found
    return None


def signal_notes(signals: Mapping[tuple[str, datetime], SlotSignal]) -> list[str]:
    """One plan note per site whose carbon figures are synthetic or a fallback, saying which
    provider supplied how many slots and why (the plan's ``fallback_signals`` flag alone does
    not say which site or why)."""
    counts: dict[tuple[str, str, bool, str], int] = {}
    total: dict[str, int] = {}
    for (site, _), sig in signals.items():
        total[site] = total.get(site, 0) + 1
        if sig.synthetic or sig.fallback_reason is not None:
            key = (
                site,
                sig.carbon_provider or "an unnamed source",
                sig.synthetic,
                sig.fallback_reason or "",
            )
            counts[key] = counts.get(key, 0) + 1
    notes = []
    for (site, provider, synthetic, reason), n in sorted(counts.items()):
        what = f"{'SYNTHETIC ' if synthetic else ''}carbon from {provider}"
        why = f" ({reason})" if reason else ""
        notes.append(f"site {site}: {n} of {total[site]} slot(s) planned on {what}{why}")
    return notes


def scope2_signals(
    fleet: Fleet, signals: Mapping[tuple[str, datetime], SlotSignal]
) -> dict[tuple[str, datetime], SlotSignal]:
    """The signals with every marginal or lifecycle carbon figure replaced by the average direct
    factor booking uses for location-based scope 2 (the site's ``average_carbon_g_per_kwh``,
    else the zone average): planned figures in the ledger's factor type."""
    out = dict(signals)
    for key, sig in signals.items():
        if sig.carbon_factor != CarbonFactor.AVERAGE_DIRECT.value:
            try:
                average, _ = _average_fallback(fleet, key[0])
            except KeyError:
                continue
            out[key] = replace(
                sig, carbon_g_per_kwh=average, carbon_factor=CarbonFactor.AVERAGE_DIRECT.value
            )
    return out


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
        fallback=assignment.signal_fallback_reason is not None,
        carbon_factor=assignment.carbon_factor or CarbonFactor.AVERAGE_DIRECT.value,
        carbon_provider=assignment.signal_provider,
        synthetic=bool(assignment.signal_synthetic),
        fallback_reason=assignment.signal_fallback_reason,
    )


@dataclass(frozen=True, slots=True)
class _Picked:
    value: float | None
    source: str | None
    key: _Key | None = None


def _pick(
    session: Session, fleet: Fleet, site: str, slot: datetime, kind: str, planned: float | None
) -> _Picked:
    """One signal of the slot: actual, else the plan's, else forecast, else persistence."""
    actual = _cached(session, fleet, site, kind, slot, ACTUAL)
    if actual is not None:
        return _Picked(actual[0], "actual", actual[1])
    if planned is not None:
        return _Picked(planned, "plan")
    forecast = _cached(session, fleet, site, kind, slot, FORECAST)
    if forecast is not None:
        return _Picked(forecast[0], "forecast", forecast[1])
    persisted = _persisted(session, fleet, site, kind, slot)
    if persisted is not None:
        return _Picked(persisted[0], "persistence", persisted[1])
    return _Picked(None, None)


def _price_fallback(picked: _Picked) -> str | None:
    if picked.value is None:
        return "no-price"
    if picked.source == "persistence":
        return "persistence"
    return "fallback-provider" if picked.key is not None and picked.key.fallback else None


def _carbon(
    fleet: Fleet, site: str, slot: datetime, picked: _Picked, planned: SlotSignal | None
) -> SlotSignal:
    """The carbon part of the booking signal, with its provenance (``SlotSignal`` fields)."""
    from scheduler.forecasts.base import carbon_factor_of
    from scheduler.forecasts.provenance import SYNTHETIC_PROVIDERS

    assert picked.value is not None and picked.source is not None
    if picked.source == "plan" and planned is not None:
        return planned
    key = picked.key
    assert key is not None  # every source but the plan's names its provider
    reason = None
    if key.fallback:
        configured = _provider_keys(fleet, site, CARBON)[0].provider
        reason = (
            f"fallback-provider: {configured} has no value cached for this slot; "
            f"fallback provider {key.provider}"
        )
    if picked.source == "persistence":
        reason = (
            f"persistence: no value for this slot; {key.provider}'s at the same time "
            "on an earlier day"
        )
    return SlotSignal(
        time=slot,
        site=site,
        carbon_g_per_kwh=picked.value,
        price_per_kwh=0.0,
        renewable_kw=0.0,
        source=picked.source,
        fallback=reason is not None,
        carbon_factor=carbon_factor_of(key.provider, key.options),
        carbon_provider=key.provider,
        synthetic=key.provider in SYNTHETIC_PROVIDERS,
        fallback_reason=reason,
    )


def _lookup_booking(fleet: Fleet, site: str, found: tuple[SlotSignal, str]) -> BookingSignal:
    from scheduler.forecasts.provenance import fallback_kind

    signal, label = found
    average, average_fallback = None, None
    if signal.carbon_factor != CarbonFactor.AVERAGE_DIRECT.value:  # scope 2 needs an average
        average, average_fallback = _average_fallback(fleet, site)
    return BookingSignal(
        signal, label, fallback_kind(signal.fallback_reason), average, average_fallback
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
    average ``ZONE_AVERAGE_G_PER_KWH``. The cache is read under the configured provider's key,
    then under its ``fallback`` provider's, so a shard finds what the planner saw whichever
    provider supplied it. Price, renewables and WUE follow the same order (actual, plan,
    forecast, persistence; no renewables and the site's WUE when nothing is known; no price:
    cost 0, labelled ``no-price``).

    The row keeps the signal's provenance (provider, synthetic, fallback and why): a plan made
    on a fallback signal books as a fallback. A marginal or lifecycle carbon signal is kept for
    its own figure, and an average direct factor (site factor, else zone average, labelled) is
    found for location-based scope 2.
    """
    if lookup is not None:
        found = lookup(site, slot)
        if found is not None:
            return _lookup_booking(fleet, site, found)
    planned = _planned_signal(assignment, site, slot)
    picked = _pick(
        session, fleet, site, slot, CARBON, planned.carbon_g_per_kwh if planned else None
    )
    if picked.value is not None and picked.source is not None:
        carbon = _carbon(fleet, site, slot, picked, planned)
    else:
        value, label = _average_fallback(fleet, site)
        why = (
            "the site's average_carbon_g_per_kwh"
            if label == "site-factor"
            else f"the zone average {ZONE_AVERAGE_G_PER_KWH:g} g/kWh (Ember 2024)"
        )
        carbon = SlotSignal(
            slot,
            site,
            value,
            0.0,
            0.0,
            source=label,
            fallback=True,
            fallback_reason=f"{label}: no carbon signal cached for the slot or the 14 days "
            f"before; {why}",
        )
        log.warning(
            "no carbon intensity for %s at %s: booked with the %s fallback %.1f g/kWh",
            site,
            slot,
            label,
            value,
        )
    from scheduler.forecasts.provenance import fallback_kind

    price = _pick(session, fleet, site, slot, PRICE, planned.price_per_kwh if planned else None)
    solar = _pick(session, fleet, site, slot, SOLAR, planned.renewable_kw if planned else None)
    wue = _pick(session, fleet, site, slot, WUE, planned.wue_l_per_kwh if planned else None)
    signal = replace(
        carbon,
        price_per_kwh=price.value or 0.0,
        renewable_kw=max(0.0, solar.value or 0.0),
        wue_l_per_kwh=wue.value,
    )
    average, average_fallback = None, None
    if signal.carbon_factor != CarbonFactor.AVERAGE_DIRECT.value:
        average, average_fallback = _average_fallback(fleet, site)
    return BookingSignal(
        signal,
        str(carbon.source),
        fallback_kind(carbon.fallback_reason),
        average,
        average_fallback,
        _price_fallback(price),
    )
