"""WattTime v3: marginal operating emissions (co2_moer) forecasts, converted to g/kWh."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from scheduler.clock import monotonic
from scheduler.domain import Site
from scheduler.forecasts.base import (
    CARBON,
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

DEFAULT_BASE_URL = "https://api.watttime.org"
G_PER_KWH_PER_LBS_PER_MWH = 0.45359237
"""1 lb/MWh = 453.59237 g / 1000 kWh."""

_TOKEN_LIFE_S = 25 * 60.0  # WattTime tokens last 30 minutes (real elapsed time)


def lbs_per_mwh_to_g_per_kwh(value: float) -> float:
    """Convert an emission rate from lbs CO2/MWh to g CO2/kWh."""
    return value * G_PER_KWH_PER_LBS_PER_MWH


class WattTimeProvider:
    """Marginal carbon intensity (MOER) from ``/v3/forecast?region=...&signal_type=co2_moer``.

    WattTime reports lbs CO2/MWh; values are converted to g/kWh (x 0.45359237). MOER is a
    marginal signal, not the average intensity other providers give: prefer one kind per fleet.
    Options: ``region`` (e.g. ``CAISO_NORTH``), ``signal_type`` (default ``co2_moer``),
    ``base_url``. Credentials: ``GRIDSHIFT_WATTTIME_USERNAME`` and ``GRIDSHIFT_WATTTIME_PASSWORD``
    (basic auth on ``/login`` gives a bearer token, cached for 25 minutes).
    """

    name = "watttime"
    signals = frozenset({CARBON})

    def __init__(self, http: HttpClient, *, username: str, password: str) -> None:
        """Use ``http`` for requests and the WattTime account ``username``/``password``."""
        self.http = http
        self.username = username
        self.password = password
        self._token: tuple[str, str, float] | None = None  # base_url, token, monotonic obtained at

    def _login(self, base: str, site: str) -> str:
        now = monotonic()
        if self._token and self._token[0] == base and now - self._token[2] < _TOKEN_LIFE_S:
            return self._token[1]
        payload = self.http.get_json(
            f"{base}/login", auth=(self.username, self.password), what=f"{self.name} login"
        )
        token = payload.get("token") if isinstance(payload, Mapping) else None
        if not isinstance(token, str) or not token:
            raise ProviderError(f"site {site}: watttime login returned no token")
        self._token = (base, token, now)
        return token

    def fetch(
        self, site: Site, signal: str, options: Mapping[str, Any], start: datetime, end: datetime
    ) -> FetchResult:
        """Log in (if needed) and fetch the region's forecast.

        Raises:
            ProviderError: missing credentials or region, unreachable API, HTTP error (401/403
                mean wrong credentials) or bad payload.
        """
        if not (self.username and self.password):
            raise ProviderError(
                f"site {site.name}: watttime needs an account; set GRIDSHIFT_WATTTIME_USERNAME "
                "and GRIDSHIFT_WATTTIME_PASSWORD (or use another carbon provider)"
            )
        region = require_option(options, "region", self.name, site.name)
        base = base_url(options, DEFAULT_BASE_URL)
        token = self._login(base, site.name)
        payload = self.http.get_json(
            f"{base}/v3/forecast",
            params={"region": region, "signal_type": options.get("signal_type", "co2_moer")},
            headers={"Authorization": f"Bearer {token}"},
            what=f"{self.name} (site {site.name})",
        )
        values, step = parse_forecast(payload)
        return FetchResult(
            forecast=Series(values, step, "g/kWh"),
            notes=("watttime: marginal (MOER) intensity converted from lbs/MWh to g/kWh",),
        )


def parse_forecast(payload: Any) -> tuple[dict[datetime, float], timedelta]:
    """Read ``{"data": [{"point_time", "value"}], "meta": {"units", "data_point_period_seconds"}}``.

    Values in ``lbs_co2_per_mwh`` are converted to g/kWh; ``g_co2_per_kwh`` is kept as is.

    Raises:
        ProviderError: the payload has no data list, a point is malformed or the unit unknown.
    """
    if not isinstance(payload, Mapping) or not isinstance(payload.get("data"), list):
        raise ProviderError("watttime: answer has no 'data' list")
    raw_meta = payload.get("meta")
    meta: Mapping[str, Any] = raw_meta if isinstance(raw_meta, Mapping) else {}
    units = str(meta.get("units", "lbs_co2_per_mwh")).lower()
    if units in ("lbs_co2_per_mwh", "lbs/mwh"):
        factor = G_PER_KWH_PER_LBS_PER_MWH
    elif units in ("g_co2_per_kwh", "g/kwh"):
        factor = 1.0
    else:
        raise ProviderError(f"watttime: unknown units {units!r}; expected lbs_co2_per_mwh")
    out: dict[datetime, float] = {}
    for i, point in enumerate(payload["data"]):
        if not isinstance(point, Mapping):
            raise ProviderError(f"watttime: data point {i} is not an object")
        t = parse_utc(point.get("point_time"), f"watttime point {i} point_time")
        out[t] = as_float(point.get("value"), f"watttime point {i} value") * factor
    if not out:
        raise ProviderError("watttime: the forecast holds no points")
    period = meta.get("data_point_period_seconds")
    step = timedelta(seconds=float(period)) if period else infer_step(out)
    return out, step
