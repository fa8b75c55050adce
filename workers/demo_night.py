"""The demo's night: when it is told, and the SYNTHETIC signals of the three sample sites.

The demo replays the most recent night that is wholly in the past (so that ``gridshift
report`` and the dashboard, reading up to now, see all of it): nightly jobs are submitted at
18:00 UTC, the evening peak, with deadlines the next morning or, for the backlog, the next
early afternoon.

The signals are generated shapes, labelled ``synthetic`` everywhere they appear, built to be
plausible for each site's grid rather than measured:

- ``gb-london``: a gas-and-wind grid; the evening peak near 250 g/kWh, a windy night that brings
  it down to about 80 g/kWh between midnight and 05:00; a high evening price.
- ``de-frankfurt``: a coal-and-gas grid, about 430 g/kWh at night and 480 at the evening peak,
  some solar dip at midday; the dearest power; overcast, so its own array yields nothing.
- ``es-madrid``: a solar grid, about 220 g/kWh at night (gas), down to about 95 at midday, the
  cheapest midday power, and an on-site solar array (the fleet's ``pv_kw_peak``).

These scripted shapes are the night's *actuals* (what the ledger books). The plan, made at the
evening, used a forecast of them: ``forecast_of`` adds a seeded SYNTHETIC carbon forecast error,
so that the review's forecast-accuracy view has something to show.
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from scheduler.domain import Fleet, SlotSignal
from scheduler.forecasts.synthetic import clear_sky_fraction, site_profile

SOURCE = "synthetic"
EVENING_HOUR = 18
#: How long after the evening the story's last work may run (the backlog's 14:00 deadline).
STORY_SPAN = timedelta(hours=20)


def story_evening(now: datetime) -> datetime:
    """The latest 18:00 UTC whose next 20 hours are all before ``now`` (the replayed night)."""
    evening = now.astimezone(UTC).replace(hour=EVENING_HOUR, minute=0, second=0, microsecond=0)
    while evening + STORY_SPAN > now:
        evening -= timedelta(days=1)
    return evening


def _bump(hour: float, centre: float, width: float) -> float:
    d = min(abs(hour - centre), 24 - abs(hour - centre))
    return math.exp(-((d / width) ** 2))


def _jitter(site: str, kind: str, t: datetime) -> float:
    """A deterministic factor in [0.97, 1.03) keyed by site, signal and hour."""
    return 0.97 + 0.06 * (zlib.crc32(f"{site}|{kind}|{t.isoformat()}".encode()) / 2**32)


# (night carbon, evening peak added, night wind taken off, midday solar taken off) g/kWh, and
# (night price, evening peak added, midday dip) per kWh, by site.
# (night price, evening peak added, midday dip) per kWh, and the share of the on-site array's
# clear-sky output that the day's weather lets through, by site.
_SHAPES: dict[str, tuple[tuple[float, float, float, float], tuple[float, float, float], float]] = {
    "gb-london": ((210.0, 50.0, 130.0, 30.0), (0.16, 0.14, 0.02), 0.0),
    "de-frankfurt": ((430.0, 50.0, 0.0, 120.0), (0.24, 0.12, 0.06), 0.0),  # overcast all day
    "es-madrid": ((220.0, 40.0, 0.0, 130.0), (0.12, 0.08, 0.08), 0.8),
}
_DEFAULT_SHAPE = ((300.0, 40.0, 40.0, 60.0), (0.18, 0.10, 0.04), 0.5)


def night_signals(
    fleet: Fleet, start: datetime, hours: int
) -> dict[tuple[str, datetime], SlotSignal]:
    """SYNTHETIC carbon, price and on-site solar for every site and hourly slot of the window.

    Returns:
        ``signals[(site, slot)]`` for ``hours`` slots from ``start`` (floored to the hour).
    """
    first = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    out: dict[tuple[str, datetime], SlotSignal] = {}
    for site in fleet.sites:
        profile = site_profile(site)
        (c_night, c_peak, c_wind, c_sun), (p_night, p_peak, p_sun), weather = _SHAPES.get(
            site.name, _DEFAULT_SHAPE
        )
        for i in range(hours):
            t = first + timedelta(hours=i)
            mid = t + timedelta(minutes=30)
            hour = (mid.hour + mid.minute / 60 + profile.longitude / 15) % 24
            # the grid's own solar follows the site's sky; 1.0 at a clear noon
            sun = clear_sky_fraction(mid, profile.latitude, profile.longitude) / max(
                clear_sky_fraction(
                    mid.replace(hour=12) - timedelta(hours=profile.longitude / 15),
                    profile.latitude,
                    profile.longitude,
                ),
                1e-6,
            )
            carbon = (
                c_night
                + c_peak * _bump(hour, 18.5, 2.0)
                - c_wind * _bump(hour, 2.5, 2.5)
                - c_sun * min(sun, 1.0)
            ) * _jitter(site.name, "carbon", t)
            price = (p_night + p_peak * _bump(hour, 19.0, 2.0) - p_sun * min(sun, 1.0)) * _jitter(
                site.name, "price", t
            )
            panel = (
                profile.pv_kw_peak
                * weather
                * clear_sky_fraction(mid, profile.latitude, profile.longitude)
            )
            out[(site.name, t)] = SlotSignal(
                time=t,
                site=site.name,
                carbon_g_per_kwh=round(carbon, 1),
                price_per_kwh=round(price, 4),
                renewable_kw=round(panel, 5),
                source=SOURCE,
                carbon_provider=SOURCE,
                synthetic=True,
            )
    return out


#: The demo's SYNTHETIC day-ahead carbon forecast error: a seeded, zero-mean Gaussian relative
#: error whose spread grows with lead time, ``FORECAST_ERROR_SD_AT_0 + FORECAST_ERROR_SD_PER_HOUR
#: x lead hours`` (2 % for the next hour, about 8 % at 20 hours), clipped to
#: ``FORECAST_ERROR_CLIP``. Only carbon intensity gets an error; price and on-site solar are
#: forecast exactly (the demo's booking keeps the plan's solar share, see ``demo_report``).
FORECAST_ERROR_SEED = 13
FORECAST_ERROR_SD_AT_0 = 0.02
FORECAST_ERROR_SD_PER_HOUR = 0.003
FORECAST_ERROR_CLIP = 0.15


def forecast_of(
    actuals: Mapping[tuple[str, datetime], SlotSignal], issued_at: datetime
) -> dict[tuple[str, datetime], SlotSignal]:
    """The SYNTHETIC forecast the demo's plan uses: the scripted actuals with a seeded error.

    Deterministic for a given night: the error of each (site, slot) comes from a generator
    seeded with ``FORECAST_ERROR_SEED``, the site and the slot's lead hour after ``issued_at``.

    Returns:
        The same keys as ``actuals``; carbon intensity off by the error, everything else equal.
    """
    out: dict[tuple[str, datetime], SlotSignal] = {}
    for (site, t), sig in actuals.items():
        lead = max(0.0, (t - issued_at) / timedelta(hours=1))
        rng = random.Random(f"{FORECAST_ERROR_SEED}|{site}|{int(lead)}")
        sd = FORECAST_ERROR_SD_AT_0 + FORECAST_ERROR_SD_PER_HOUR * lead
        err = max(-FORECAST_ERROR_CLIP, min(FORECAST_ERROR_CLIP, rng.gauss(0.0, sd)))
        out[(site, t)] = replace(sig, carbon_g_per_kwh=round(sig.carbon_g_per_kwh * (1.0 + err), 1))
    return out


def forecast_error_note(
    forecast: Mapping[tuple[str, datetime], SlotSignal],
    actuals: Mapping[tuple[str, datetime], SlotSignal],
) -> str:
    """One line on how the plan's carbon forecast missed the actuals ("" when they agree)."""
    pct = [
        abs(forecast[k].carbon_g_per_kwh - a.carbon_g_per_kwh) / a.carbon_g_per_kwh
        for k, a in actuals.items()
        if k in forecast and a.carbon_g_per_kwh > 0
    ]
    if not pct or max(pct) == 0:
        return ""
    return (
        "CO2 also differs by the carbon forecast error: the plan used a SYNTHETIC forecast (the "
        f"scripted night with a seeded error, mean absolute {100 * sum(pct) / len(pct):.1f} %, "
        f"at most {100 * max(pct):.1f} %), the ledger books the night's actuals; the dashboard's "
        "Forecasts tab (`gridshift demo --serve`) shows both"
    )


def actuals_lookup(
    actuals: Mapping[tuple[str, datetime], SlotSignal],
) -> Callable[[str, datetime], tuple[SlotSignal, str] | None]:
    """The demo's booking signals: the night's actuals of the slot a shard ran in."""

    def lookup(site: str, slot: datetime) -> tuple[SlotSignal, str] | None:
        found = actuals.get((site, slot))
        return None if found is None else (found, found.source)

    return lookup
