"""Open-Meteo (no key): on-site solar power from the irradiance forecast and the PV size."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from scheduler.domain import Site
from scheduler.forecasts.base import (
    SOLAR,
    FetchResult,
    ProviderError,
    Series,
    as_float,
    base_url,
    parse_utc,
    require_option,
)
from scheduler.forecasts.http import HttpClient

DEFAULT_BASE_URL = "https://api.open-meteo.com"
DEFAULT_PERFORMANCE_RATIO = 0.8
STC_IRRADIANCE_W_M2 = 1000.0
STEP = timedelta(hours=1)
VARIABLES = ("shortwave_radiation", "global_tilted_irradiance")


def pv_power_kw(irradiance_w_m2: float, pv_kw_peak: float, performance_ratio: float) -> float:
    """PV output in kW: ``pv_kw_peak * irradiance_w_m2 / 1000 * performance_ratio`` (>= 0).

    ``pv_kw_peak`` is the array's rating at standard test conditions (1000 W/m2); the
    performance ratio lumps inverter, temperature, soiling and wiring losses (0.75-0.85 typical).
    """
    return max(0.0, pv_kw_peak * irradiance_w_m2 / STC_IRRADIANCE_W_M2 * performance_ratio)


class OpenMeteoSolarProvider:
    """Mean on-site solar power (renewable_kw) per hour from Open-Meteo's hourly forecast.

    Options: ``latitude``, ``longitude``, ``pv_kw_peak`` (required); ``performance_ratio``
    (default 0.8); ``variable`` (``shortwave_radiation``, i.e. global horizontal, default, or
    ``global_tilted_irradiance`` with ``tilt`` and ``azimuth`` in degrees); ``base_url``.

    Open-Meteo's radiation values are means over the PRECEDING hour, so the value stamped
    ``T`` is placed on the interval ``[T - 1 h, T)``.
    """

    name = "open-meteo"
    signals = frozenset({SOLAR})

    def __init__(self, http: HttpClient) -> None:
        """Use ``http`` for every request."""
        self.http = http

    def fetch(
        self, site: Site, signal: str, options: Mapping[str, Any], start: datetime, end: datetime
    ) -> FetchResult:
        """Fetch hourly irradiance covering ``[start, end)`` and convert it to kW.

        Raises:
            ProviderError: missing options, unreachable API, HTTP error or bad payload.
        """
        lat = require_option(options, "latitude", self.name, site.name)
        lon = require_option(options, "longitude", self.name, site.name)
        pv_kw_peak = as_float(
            require_option(options, "pv_kw_peak", self.name, site.name), "pv_kw_peak"
        )
        ratio = as_float(options.get("performance_ratio", DEFAULT_PERFORMANCE_RATIO), "ratio")
        variable = str(options.get("variable", "shortwave_radiation"))
        if variable not in VARIABLES:
            raise ProviderError(
                f"site {site.name}: open-meteo variable {variable!r} is not supported; use "
                f"one of {', '.join(VARIABLES)}"
            )
        params: dict[str, Any] = {
            "latitude": lat,
            "longitude": lon,
            "hourly": variable,
            "timezone": "GMT",
            "start_date": start.strftime("%Y-%m-%d"),
            # the last interval [end - 1 h, end) is stamped at ``end``: ask one hour more
            "end_date": (end + STEP).strftime("%Y-%m-%d"),
        }
        if variable == "global_tilted_irradiance":
            params["tilt"] = options.get("tilt", 30)
            params["azimuth"] = options.get("azimuth", 0)
        base = base_url(options, DEFAULT_BASE_URL)
        payload = self.http.get_json(
            f"{base}/v1/forecast", params=params, what=f"{self.name} (site {site.name})"
        )
        irradiance = parse_hourly(payload, variable)
        values = {t: pv_power_kw(w, pv_kw_peak, ratio) for t, w in irradiance.items()}
        return FetchResult(forecast=Series(values, STEP, "kW"))


def parse_hourly(payload: Any, variable: str) -> dict[datetime, float]:
    """Read ``{"hourly": {"time": [...], variable: [...]}}`` into interval start -> W/m2.

    Times without an offset are UTC (the request asks for ``timezone=GMT``); each value is the
    mean of the hour before its stamp. Null values (beyond the model's range) are skipped.

    Raises:
        ProviderError: the payload lacks the hourly arrays or they differ in length.
    """
    hourly = payload.get("hourly") if isinstance(payload, Mapping) else None
    if not isinstance(hourly, Mapping):
        raise ProviderError("open-meteo: answer has no 'hourly' object")
    times, values = hourly.get("time"), hourly.get(variable)
    if not isinstance(times, list) or not isinstance(values, list) or len(times) != len(values):
        raise ProviderError(f"open-meteo: 'hourly' lacks matching 'time' and {variable!r} arrays")
    offset = timedelta(seconds=as_float(payload.get("utc_offset_seconds", 0), "utc_offset"))
    out: dict[datetime, float] = {}
    for i, (stamp, value) in enumerate(zip(times, values, strict=True)):
        if value is None:
            continue
        t = parse_utc(stamp, f"open-meteo hourly.time[{i}]") - offset
        out[t - STEP] = as_float(value, f"open-meteo {variable}[{i}]")
    if not out:
        raise ProviderError(f"open-meteo: no {variable} values in the answer")
    return out
