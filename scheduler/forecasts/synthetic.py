"""SYNTHETIC signals for demos and tests: plausible daily shapes, deterministic, labelled."""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from scheduler.domain import Fleet, Site, SlotSignal
from scheduler.forecasts.base import (
    CARBON,
    PRICE,
    SOLAR,
    WUE,
    FetchResult,
    Series,
    as_float,
    require_option,
    resample,
    utc,
)

SOURCE = "synthetic"
STEP = timedelta(minutes=15)
DEFAULT_SEED = 20261122

# Typical annual-mean grid intensity (g/kWh) and price (per kWh) by country prefix of a site
# name: rough public orders of magnitude, used only to shape SYNTHETIC data.
_COUNTRY = {
    "gb": (190.0, 0.20, 51.5, -0.1),
    "de": (380.0, 0.17, 50.1, 8.7),
    "es": (150.0, 0.11, 40.4, -3.7),
    "fr": (55.0, 0.12, 48.9, 2.4),
    "se": (30.0, 0.06, 65.6, 22.2),
    "pl": (650.0, 0.14, 52.2, 21.0),
    "nl": (330.0, 0.15, 52.4, 4.9),
    "us": (380.0, 0.09, 37.4, -122.0),
}
_DEFAULT_COUNTRY = (300.0, 0.15, 48.0, 10.0)


@dataclass(frozen=True, slots=True)
class SiteProfile:
    """Parameters of a site's synthetic signals (all overridable by source options)."""

    carbon_base_g_per_kwh: float
    price_base_per_kwh: float
    latitude: float
    longitude: float
    pv_kw_peak: float
    wue_l_per_kwh: float


def site_profile(site: Site, options: Mapping[str, Any] | None = None) -> SiteProfile:
    """Derive synthetic parameters from the site's name, its signal options and ``options``.

    Options read (from any of the site's ``signals:`` entries, then ``options``):
    ``base_g_per_kwh``, ``base_price_per_kwh``, ``latitude``, ``longitude``, ``pv_kw_peak``.
    """
    merged: dict[str, Any] = {}
    for source in site.signals.values():
        merged.update(source.options)
    merged.update(options or {})
    carbon, price, lat, lon = _COUNTRY.get(site.name.split("-", 1)[0], _DEFAULT_COUNTRY)
    return SiteProfile(
        carbon_base_g_per_kwh=as_float(merged.get("base_g_per_kwh", carbon), "base_g_per_kwh"),
        price_base_per_kwh=as_float(merged.get("base_price_per_kwh", price), "base_price"),
        latitude=as_float(merged.get("latitude", lat), "latitude"),
        longitude=as_float(merged.get("longitude", lon), "longitude"),
        pv_kw_peak=as_float(merged.get("pv_kw_peak", 0.0), "pv_kw_peak"),
        wue_l_per_kwh=site.wue_l_per_kwh,
    )


def _noise(seed: int, *parts: object) -> float:
    """A deterministic pseudo-random number in [-1, 1) keyed by ``parts`` (no global state)."""
    key = "|".join([str(seed), *map(str, parts)]).encode()
    return zlib.crc32(key) / 2**31 - 1.0


def clear_sky_fraction(t: datetime, latitude: float, longitude: float) -> float:
    """Clear-sky irradiance at ``t`` as a fraction of 1000 W/m2 (sun elevation model, >= 0)."""
    t = utc(t)
    day = t.timetuple().tm_yday
    declination = math.radians(23.44) * math.sin(2 * math.pi * (284 + day) / 365)
    solar_hour = t.hour + t.minute / 60 + longitude / 15
    hour_angle = math.radians(15 * (solar_hour - 12))
    lat = math.radians(latitude)
    sin_elev = math.sin(lat) * math.sin(declination) + math.cos(lat) * math.cos(
        declination
    ) * math.cos(hour_angle)
    return float(max(0.0, sin_elev) ** 1.2)


def _local_hour(t: datetime, longitude: float) -> float:
    return (t.hour + t.minute / 60 + longitude / 15) % 24


def _bump(hour: float, centre: float, width: float) -> float:
    d = min(abs(hour - centre), 24 - abs(hour - centre))
    return math.exp(-((d / width) ** 2))


def synthetic_value(profile: SiteProfile, signal: str, t: datetime, seed: int, site: str) -> float:
    """The SYNTHETIC value of ``signal`` at instant ``t`` for a site.

    Shapes: solar is a clear-sky bell by latitude and day of year times a daily cloudiness;
    carbon has a morning and a larger evening peak, dips with the grid's midday solar and moves
    with a daily wind factor; price follows carbon with its own evening peak; WUE rises in the
    afternoon heat. Noise is keyed by (seed, site, signal, day or quarter-hour).
    """
    t = utc(t)
    day = t.date().isoformat()
    cloud = 0.55 + 0.45 * (0.5 + 0.5 * _noise(seed, site, "cloud", day))
    sun = clear_sky_fraction(t, profile.latitude, profile.longitude)
    if signal == SOLAR:
        return profile.pv_kw_peak * sun * cloud * 0.8
    hour = _local_hour(t, profile.longitude)
    wind = 1.0 + 0.18 * _noise(seed, site, "wind", day)
    jitter = 1.0 + 0.03 * _noise(seed, site, signal, t.isoformat())
    shape = 1.0 + 0.08 * _bump(hour, 8.0, 2.0) + 0.22 * _bump(hour, 18.5, 2.5)
    carbon_factor = max(0.2, shape * wind - 0.35 * sun * cloud)
    if signal == CARBON:
        return profile.carbon_base_g_per_kwh * carbon_factor * jitter
    if signal == PRICE:
        peak = 0.15 * _bump(hour, 19.0, 2.0)
        return profile.price_base_per_kwh * (0.55 + 0.45 * carbon_factor + peak) * jitter
    if signal == WUE:
        return profile.wue_l_per_kwh * (0.8 + 0.4 * _bump(hour, 15.0, 4.0))
    raise ValueError(f"unknown signal {signal!r}")


class SyntheticProvider:
    """SYNTHETIC signals (source ``synthetic``) at 15-minute resolution, for demos and tests.

    Options: ``seed`` and the overrides of ``site_profile``. Never mistaken for data: the
    signal service labels every slot it fills from here with source ``synthetic``.
    """

    name = SOURCE
    signals = frozenset({CARBON, PRICE, SOLAR, WUE})

    def __init__(self, *, seed: int = DEFAULT_SEED) -> None:
        """Use ``seed`` unless a source's options give their own."""
        self.seed = seed

    def fetch(
        self, site: Site, signal: str, options: Mapping[str, Any], start: datetime, end: datetime
    ) -> FetchResult:
        """Generate ``signal`` over ``[start, end)`` (quarter-hour means at interval midpoints)."""
        seed = int(options.get("seed", self.seed))
        profile = site_profile(site, options)
        start = utc(start)
        first = start.replace(minute=start.minute - start.minute % 15, second=0, microsecond=0)
        values: dict[datetime, float] = {}
        t = first
        while t < end:
            values[t] = synthetic_value(profile, signal, t + STEP / 2, seed, site.name)
            t += STEP
        return FetchResult(forecast=Series(values, STEP), notes=("synthetic data",))


class ConstantProvider:
    """A constant value (option ``value``), e.g. a flat tariff: ``{provider: constant, value: 0.15}``."""

    name = "constant"
    signals = frozenset({CARBON, PRICE, SOLAR, WUE})

    def fetch(
        self, site: Site, signal: str, options: Mapping[str, Any], start: datetime, end: datetime
    ) -> FetchResult:
        """Hold ``options['value']`` over ``[start, end)``."""
        value = as_float(require_option(options, "value", self.name, site.name), "value")
        return FetchResult(forecast=Series({utc(start): value}, end - start))


def synthetic_signals(
    fleet: Fleet, start: datetime, hours: int, *, seed: int = DEFAULT_SEED
) -> dict[tuple[str, datetime], SlotSignal]:
    """SYNTHETIC ``SlotSignal``s for every site and slot of ``[start, start + hours)``.

    Deterministic for a given seed (the same slot gets the same value whatever the window).
    ``start`` is floored to a slot boundary. Every signal has ``source="synthetic"``; solar
    uses the site's ``pv_kw_peak`` from its solar source (0 without one); WUE is left to the
    site default.

    Returns:
        ``signals[(site, slot)]`` for every site and slot.
    """
    slot = timedelta(minutes=fleet.slot_minutes)
    start = utc(start)
    midnight = start.replace(hour=0, minute=0, second=0, microsecond=0)
    first = midnight + ((start - midnight) // slot) * slot
    slots = [first + i * slot for i in range(int(timedelta(hours=hours) / slot))]
    end = first + len(slots) * slot
    provider = SyntheticProvider(seed=seed)
    out: dict[tuple[str, datetime], SlotSignal] = {}
    for site in fleet.sites:
        per_signal = {
            kind: resample(
                provider.fetch(site, kind, {}, first, end).forecast, slots, fleet.slot_minutes
            )
            for kind in (CARBON, PRICE, SOLAR)
        }
        for t in slots:
            out[(site.name, t)] = SlotSignal(
                time=t,
                site=site.name,
                carbon_g_per_kwh=per_signal[CARBON][t],
                price_per_kwh=per_signal[PRICE][t],
                renewable_kw=per_signal[SOLAR][t],
                source=SOURCE,
                carbon_provider=SOURCE,
                synthetic=True,
            )
    return out
