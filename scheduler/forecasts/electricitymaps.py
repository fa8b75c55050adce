"""Electricity Maps v3: carbon-intensity forecasts per zone (needs an API token)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from scheduler.domain import Site
from scheduler.forecasts.base import (
    CARBON,
    MIX_KINDS,
    FetchResult,
    ProviderError,
    Series,
    as_float,
    base_url,
    infer_step,
    parse_utc,
    require_option,
)
from scheduler.forecasts.http import HttpClient
from scheduler.forecasts.mix import electricitymaps_mix

DEFAULT_BASE_URL = "https://api.electricitymaps.com"


class ElectricityMapsProvider:
    """Grid carbon intensity in gCO2eq/kWh from ``/v3/carbon-intensity/forecast?zone=``.

    Options: ``zone`` (e.g. ``DE``, ``FR``, ``US-CAL-CISO``), ``horizon_hours`` (sent as
    ``horizonHours``, e.g. 24, 48 or 72; default: the API's), ``emission_factor_type``
    (``direct``, the default gridshift sends, so that the figures are location-based scope 2
    factors; ``lifecycle``, the API's own default, labels the signal ``average-lifecycle``),
    ``base_url``. The token comes from
    ``GRIDSHIFT_ELECTRICITYMAPS_TOKEN`` and travels in the ``auth-token`` header.

    The generation mix (``signals.mix``) comes from ``/v3/power-breakdown/history?zone=`` (the
    last 24 h of the consumed mix, returned as actuals; see ``mix.electricitymaps_mix``).
    """

    name = "electricitymaps"
    signals = frozenset({CARBON, *MIX_KINDS})

    def __init__(self, http: HttpClient, *, token: str) -> None:
        """Use ``http`` for requests and ``token`` for authentication."""
        self.http = http
        self.token = token

    def fetch(
        self, site: Site, signal: str, options: Mapping[str, Any], start: datetime, end: datetime
    ) -> FetchResult:
        """Fetch the zone's forecast (the API decides its length, typically 24-72 h).

        Raises:
            ProviderError: no token, no zone, unreachable API, HTTP error or bad payload.
        """
        if not self.token:
            raise ProviderError(
                f"site {site.name}: electricitymaps needs an API token; set "
                "GRIDSHIFT_ELECTRICITYMAPS_TOKEN (or use another carbon provider)"
            )
        zone = require_option(options, "zone", self.name, site.name)
        base = base_url(options, DEFAULT_BASE_URL)
        if signal in MIX_KINDS:
            history = self.http.get_json(
                f"{base}/v3/power-breakdown/history",
                params={"zone": zone},
                headers={"auth-token": self.token},
                what=f"{self.name} power breakdown (site {site.name})",
            )
            mix = electricitymaps_mix(history)[signal]
            if not mix:
                raise ProviderError(f"{self.name}: no power breakdown for zone {zone}")
            series = Series(mix, infer_step(mix), "%")
            return FetchResult(forecast=series, actual=series)
        payload = self.http.get_json(
            f"{base}/v3/carbon-intensity/forecast",
            params={"zone": zone, "emissionFactorType": _factor_type(options), **_horizon(options)},
            headers={"auth-token": self.token},
            what=f"{self.name} (site {site.name})",
        )
        values = parse_forecast(payload)
        return FetchResult(forecast=Series(values, infer_step(values), "g/kWh"))


def _factor_type(options: Mapping[str, Any]) -> str:
    """Direct factors unless the source asks for lifecycle (the API's own default)."""
    return "lifecycle" if str(options.get("emission_factor_type")) == "lifecycle" else "direct"


def _horizon(options: Mapping[str, Any]) -> dict[str, Any]:
    hours = options.get("horizon_hours")
    return {} if hours in (None, "") else {"horizonHours": int(hours)}


def parse_forecast(payload: Any) -> dict[datetime, float]:
    """Read ``{"zone", "forecast": [{"carbonIntensity", "datetime"}], "updatedAt"}``.

    Raises:
        ProviderError: the payload has no forecast list or a point is malformed.
    """
    points = payload.get("forecast") if isinstance(payload, Mapping) else None
    if not isinstance(points, list) or not points:
        raise ProviderError("electricitymaps: answer has no 'forecast' list")
    out: dict[datetime, float] = {}
    for i, point in enumerate(points):
        if not isinstance(point, Mapping):
            raise ProviderError(f"electricitymaps: forecast point {i} is not an object")
        if point.get("carbonIntensity") is None:
            continue
        t = parse_utc(point.get("datetime"), f"electricitymaps point {i} datetime")
        out[t] = as_float(point["carbonIntensity"], f"electricitymaps point {i} carbonIntensity")
    if not out:
        raise ProviderError("electricitymaps: the forecast holds no values")
    return out
