"""UK Carbon Intensity API (no key): national or regional 48 h carbon forecasts, half-hourly."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
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
    parse_utc,
)
from scheduler.forecasts.http import HttpClient
from scheduler.forecasts.mix import uk_generation_mix

DEFAULT_BASE_URL = "https://api.carbonintensity.org.uk"
STEP = timedelta(minutes=30)
WINDOW = timedelta(hours=48)

REGION_IDS = {
    "north scotland": 1,
    "south scotland": 2,
    "north west england": 3,
    "north east england": 4,
    "yorkshire": 5,
    "north wales & merseyside": 6,
    "north wales and merseyside": 6,
    "south wales": 7,
    "west midlands": 8,
    "east midlands": 9,
    "east england": 10,
    "south west england": 11,
    "south england": 12,
    "london": 13,
    "south east england": 14,
    "england": 15,
    "scotland": 16,
    "wales": 17,
}
"""Region short names of the API (``/regional``) and their ids."""


def region_id(region: Any, site: str) -> int:
    """Resolve a ``region`` option (an id or a short name such as ``London``) to its id.

    Raises:
        ProviderError: unknown region (the message lists the known names).
    """
    if isinstance(region, int) and not isinstance(region, bool) and 1 <= region <= 18:
        return region
    text = str(region).strip().lower()
    if text.isdigit() and 1 <= int(text) <= 18:
        return int(text)
    if text in REGION_IDS:
        return REGION_IDS[text]
    names = ", ".join(sorted({k.title() for k in REGION_IDS}))
    raise ProviderError(
        f"site {site}: uk-carbon-intensity region {region!r} is unknown; use an id 1-17 or "
        f"one of {names}"
    )


class UkCarbonIntensityProvider:
    """Carbon intensity of Great Britain, in gCO2/kWh (location-based, half-hourly).

    Options (``signals.carbon`` in ``fleet.yaml``): ``region`` (id or short name, e.g.
    ``London``) or ``postcode`` (outward code, e.g. ``EC1A``); neither means national.
    ``base_url`` overrides the API address (tests point it at a local server).

    National answers carry ``actual`` for past half-hours; those are returned as actuals.
    Regional answers carry forecasts only.

    The generation mix (``signals.mix``, percent per fuel classified by ``mix.UK_FUELS``):
    national from ``/generation/{from}/{to}`` (the measured mix, returned as actuals too),
    regional from the ``generationmix`` of the regional forecast periods.
    """

    name = "uk-carbon-intensity"
    signals = frozenset({CARBON, *MIX_KINDS})

    def __init__(self, http: HttpClient) -> None:
        """Use ``http`` for every request (timeouts and retries live there)."""
        self.http = http

    def fetch(
        self, site: Site, signal: str, options: Mapping[str, Any], start: datetime, end: datetime
    ) -> FetchResult:
        """Fetch 48 h windows from ``start`` until ``end`` is covered.

        Raises:
            ProviderError: unreachable API, HTTP error, unknown region or a payload of the wrong
                shape.
        """
        base = base_url(options, DEFAULT_BASE_URL)
        if signal in MIX_KINDS:
            return self._mix(site, signal, options, base, start, end)
        forecast: dict[datetime, float] = {}
        actual: dict[datetime, float] = {}
        cursor = start
        while cursor < end:
            frm = cursor.strftime("%Y-%m-%dT%H:%MZ")
            if options.get("postcode"):
                path = f"/regional/intensity/{frm}/fw48h/postcode/{options['postcode']}"
            elif options.get("region") not in (None, ""):
                path = f"/regional/intensity/{frm}/fw48h/regionid/{region_id(options['region'], site.name)}"
            else:
                path = f"/intensity/{frm}/fw48h"
            payload = self.http.get_json(base + path, what=f"{self.name} (site {site.name})")
            f, a = parse_periods(payload)
            forecast.update(f)
            actual.update(a)
            if not f or max(f) < cursor:
                break  # the API has nothing further ahead
            cursor = max(f) + STEP
        if not forecast:
            raise ProviderError(f"{self.name}: no forecast periods from {start} for {site.name}")
        return FetchResult(
            forecast=Series(forecast, STEP, "g/kWh"),
            actual=Series(actual, STEP, "g/kWh") if actual else None,
        )

    def _mix(
        self,
        site: Site,
        signal: str,
        options: Mapping[str, Any],
        base: str,
        start: datetime,
        end: datetime,
    ) -> FetchResult:
        frm, to = start.strftime("%Y-%m-%dT%H:%MZ"), end.strftime("%Y-%m-%dT%H:%MZ")
        regional = bool(options.get("postcode")) or options.get("region") not in (None, "")
        if options.get("postcode"):
            path = f"/regional/intensity/{frm}/fw48h/postcode/{options['postcode']}"
        elif regional:
            path = f"/regional/intensity/{frm}/fw48h/regionid/{region_id(options['region'], site.name)}"
        else:
            path = f"/generation/{frm}/{to}"
        payload = self.http.get_json(base + path, what=f"{self.name} mix (site {site.name})")
        values = uk_generation_mix(_periods(payload))[signal]
        if not values:
            raise ProviderError(f"{self.name}: no generation mix from {start} for {site.name}")
        series = Series(values, STEP, "%")
        return FetchResult(forecast=series, actual=None if regional else series)


def _periods(payload: Any) -> Any:
    """The list of periods of a national or regional answer (see ``parse_periods``)."""
    if not isinstance(payload, Mapping) or "data" not in payload:
        raise ProviderError("uk-carbon-intensity: answer has no 'data'")
    data = payload["data"]
    one = isinstance(data, list) and len(data) == 1 and isinstance(data[0], Mapping)
    if one and "data" in data[0]:
        data = data[0]
    if isinstance(data, Mapping) and "generationmix" in data:
        return [data]  # /generation (current half-hour) answers one period
    return data.get("data") if isinstance(data, Mapping) else data


def parse_periods(payload: Any) -> tuple[dict[datetime, float], dict[datetime, float]]:
    """Read forecasts and actuals (``from`` -> gCO2/kWh) from a national or regional answer.

    National: ``{"data": [{"from", "to", "intensity": {"forecast", "actual", "index"}}]}``.
    Regional: ``{"data": {"regionid", "shortname", "data": [periods]}}`` (some deployments
    wrap the region object in a one-element list; both are read).

    Raises:
        ProviderError: the payload does not have either shape.
    """
    periods = _periods(payload)
    if not isinstance(periods, list):
        raise ProviderError("uk-carbon-intensity: 'data' is not a list of periods")
    forecast: dict[datetime, float] = {}
    actual: dict[datetime, float] = {}
    for i, period in enumerate(periods):
        if not isinstance(period, Mapping) or not isinstance(period.get("intensity"), Mapping):
            raise ProviderError(f"uk-carbon-intensity: period {i} has no 'intensity'")
        t = parse_utc(period.get("from"), f"uk-carbon-intensity period {i} 'from'")
        intensity = period["intensity"]
        if intensity.get("forecast") is not None:
            forecast[t] = as_float(intensity["forecast"], f"period {i} forecast")
        if intensity.get("actual") is not None:
            actual[t] = as_float(intensity["actual"], f"period {i} actual")
    return forecast, actual
