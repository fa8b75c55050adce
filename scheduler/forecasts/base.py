"""Provider protocol, time series of signals, resampling onto slots and cache keys."""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from scheduler.domain import CarbonFactor, Site
from scheduler.errors import ForecastUnavailable

CARBON = "carbon"
PRICE = "price"
SOLAR = "solar"
WUE = "wue"
MIX = "mix"
FOSSIL_SHARE = "fossil_share"
NUCLEAR_SHARE = "nuclear_share"
RENEWABLE_SHARE = "renewable_share"
MIX_KINDS = (FOSSIL_SHARE, NUCLEAR_SHARE, RENEWABLE_SHARE)
"""The grid's generation mix, each in percent of the energy: what ``signals.mix`` fetches and
caches (reporting only: ESRS E1-5 splits purchased electricity by source with it)."""
SIGNALS = (CARBON, PRICE, SOLAR, WUE, MIX)
"""Signal kinds a site may configure under ``signals:`` in ``fleet.yaml``."""

SIGNAL_ALIASES = {"renewable": SOLAR, "renewables": SOLAR, "water": WUE}

SIGNAL_COLUMNS = {
    CARBON: "carbon_g_per_kwh",
    PRICE: "price_per_kwh",
    SOLAR: "renewable_kw",
    WUE: "wue_l_per_kwh",
    FOSSIL_SHARE: "fossil_share_pct",
    NUCLEAR_SHARE: "nuclear_share_pct",
    RENEWABLE_SHARE: "renewable_share_pct",
}
"""The ``forecasts.csv`` column each signal kind fills (planning-formats.md section 2)."""

FORECAST = "forecast"
ACTUAL = "actual"

# Options that change how a source is reached, not what it measures: left out of cache keys so
# that a test server or a fallback setting shares the cache with the real provider.
_TRANSPORT_OPTIONS = frozenset({"base_url", "fallback", "timeout_s", "retries"})


class ProviderError(ForecastUnavailable):
    """Raised when one provider cannot deliver (network, HTTP status, bad payload, credentials).

    The signal service catches it and falls back (cache, persistence, a fallback provider).
    """


@dataclass(frozen=True, slots=True)
class Series:
    """Values of one signal at a provider's native resolution.

    Attributes:
        values: interval start (aware UTC) -> value; each value holds over ``[t, t + step)``.
        step: the native resolution (30 min for the UK API, 1 h for Open-Meteo...).
        unit: unit of the values, e.g. ``g/kWh``, ``per kWh``, ``kW``.
    """

    values: Mapping[datetime, float]
    step: timedelta
    unit: str = ""

    def __post_init__(self) -> None:
        if self.step <= timedelta(0):
            raise ValueError(f"a series step must be positive, got {self.step}")


@dataclass(frozen=True, slots=True)
class FetchResult:
    """What one provider call returned for one signal: a forecast and, if known, actuals."""

    forecast: Series
    actual: Series | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


class Provider(Protocol):
    """A source of one or more signal kinds for a site.

    Implementations live one per module (``uk.py``, ``electricitymaps.py``...); ``name`` is the
    ``provider:`` value of ``fleet.yaml``.
    """

    name: str
    signals: frozenset[str]

    def fetch(
        self, site: Site, signal: str, options: Mapping[str, Any], start: datetime, end: datetime
    ) -> FetchResult:
        """Fetch ``signal`` for ``site`` over ``[start, end)`` (aware UTC).

        Raises:
            ProviderError: the provider failed; the caller falls back.
        """
        ...


def utc(t: datetime) -> datetime:
    """Return ``t`` as an aware UTC datetime (naive input is taken to be UTC already)."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def parse_utc(text: Any, what: str = "time") -> datetime:
    """Parse an ISO-8601 time (``Z``, an offset, or naive meaning UTC) into aware UTC.

    Raises:
        ProviderError: not a string or not ISO-8601.
    """
    if not isinstance(text, str):
        raise ProviderError(f"{what} must be an ISO-8601 string, got {text!r}")
    try:
        return utc(datetime.fromisoformat(text.strip()))
    except ValueError:
        raise ProviderError(f"{what} {text!r} is not an ISO-8601 time") from None


def as_float(value: Any, what: str) -> float:
    """Convert a payload number to float.

    Raises:
        ProviderError: the value is not a finite number.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ProviderError(f"{what} must be a number, got {value!r}")
    try:
        out = float(value)
    except ValueError:
        raise ProviderError(f"{what} must be a number, got {value!r}") from None
    if out != out or out in (float("inf"), float("-inf")):
        raise ProviderError(f"{what} must be finite, got {value!r}")
    return out


def infer_step(times: Iterable[datetime], default: timedelta = timedelta(hours=1)) -> timedelta:
    """The smallest positive gap between sorted times (``default`` for fewer than two)."""
    ordered = sorted(set(times))
    gaps = [b - a for a, b in zip(ordered, ordered[1:], strict=False)]
    return min(gaps) if gaps else default


def normalise_signal(name: str) -> str:
    """Map a ``signals:`` key (``carbon``, ``price``, ``solar``/``renewable``, ``wue``) to its kind.

    Raises:
        ForecastUnavailable: an unknown key (the message lists the known ones).
    """
    kind = SIGNAL_ALIASES.get(name, name)
    if kind not in SIGNALS:
        raise ForecastUnavailable(
            f"unknown signal {name!r} under signals:; use one of {', '.join(SIGNALS)}"
        )
    return kind


def resample(series: Series, slots: Iterable[datetime], slot_minutes: int) -> dict[datetime, float]:
    """Time-weighted mean of ``series`` over each slot ``[t, t + slot_minutes)``.

    Finer data is averaged into the slot; coarser data is held constant across it (the same
    rule, since a coarse interval covers the whole slot). A slot less than half covered by the
    series is left out, so the caller can fall back for it.

    Returns:
        slot start -> value, for the slots the series covers.
    """
    slot_len = timedelta(minutes=slot_minutes)
    points = sorted(series.values.items())
    out: dict[datetime, float] = {}
    if not points:
        return out
    starts = [t for t, _ in points]
    for slot in slots:
        slot_end = slot + slot_len
        # first interval that may overlap: the one starting at or before the slot start
        i = max(0, bisect.bisect_right(starts, slot) - 1)
        covered_s = 0.0
        weighted = 0.0
        while i < len(points) and points[i][0] < slot_end:
            t, value = points[i]
            lo, hi = max(t, slot), min(t + series.step, slot_end)
            if hi > lo:
                seconds = (hi - lo).total_seconds()
                covered_s += seconds
                weighted += seconds * value
            i += 1
        if covered_s >= slot_len.total_seconds() / 2:
            out[slot] = weighted / covered_s
    return out


def cache_key(site: str, options: Mapping[str, Any]) -> str:
    """The cache key of a site's signal source: the site and its options, canonically.

    Transport options (``base_url``, ``fallback``, ``timeout_s``, ``retries``) are left out.
    """
    kept = {str(k): v for k, v in options.items() if k not in _TRANSPORT_OPTIONS}
    return f"{site}|{json.dumps(kept, sort_keys=True, default=str, separators=(',', ':'))}"


def require_option(options: Mapping[str, Any], key: str, provider: str, site: str) -> Any:
    """Return ``options[key]``.

    Raises:
        ProviderError: the option is missing (the message says where to add it).
    """
    if options.get(key) in (None, ""):
        raise ProviderError(
            f"site {site}: provider {provider} needs option {key!r}; add it under "
            f"signals: in fleet.yaml, e.g. {{provider: {provider}, {key}: ...}}"
        )
    return options[key]


def base_url(options: Mapping[str, Any], default: str) -> str:
    """A provider's API root: option ``base_url`` if set, else ``default``; no trailing slash."""
    return str(options.get("base_url") or default).rstrip("/")


def carbon_factor_of(provider: str, options: Mapping[str, Any]) -> str:
    """The factor type (``CarbonFactor`` value) of a carbon source's figures.

    An explicit ``factor_type`` option wins (a CSV of marginal rates says so). WattTime gives
    a marginal rate (MOER); Electricity Maps is asked for direct factors unless the source sets
    ``emission_factor_type: lifecycle`` (then average lifecycle); the UK Carbon Intensity API,
    CSV files (planning-formats.md section 2: direct emissions), synthetic and constant signals
    are average direct.

    Raises:
        ValueError: ``factor_type`` is not one of the ``CarbonFactor`` values.
    """
    explicit = options.get("factor_type")
    if explicit:
        value = str(explicit)
        if value not in {f.value for f in CarbonFactor}:
            raise ValueError(
                f"factor_type {value!r} is unknown; use one of "
                + ", ".join(f.value for f in CarbonFactor)
            )
        return value
    if provider == "watttime":
        return CarbonFactor.MARGINAL.value
    if provider in ("electricitymaps", "electricity-maps"):
        lifecycle = str(options.get("emission_factor_type", "direct")) == "lifecycle"
        return (CarbonFactor.AVERAGE_LIFECYCLE if lifecycle else CarbonFactor.AVERAGE_DIRECT).value
    return CarbonFactor.AVERAGE_DIRECT.value
