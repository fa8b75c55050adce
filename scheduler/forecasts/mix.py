"""The grid's generation mix (fossil, nuclear, renewable shares in percent) from provider answers.

Reporting only: the planner does not use it; ESRS E1-5 splits purchased grid electricity by
source with it (``scheduler.review.grid_mix``). A share that a source cannot classify (the UK
API's ``imports`` and ``other``, Electricity Maps' ``unknown``) stays out of all three, so the
shares may sum to less than 100 and the rest is reported as of unknown mix.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from scheduler.forecasts.base import (
    FOSSIL_SHARE,
    NUCLEAR_SHARE,
    RENEWABLE_SHARE,
    ProviderError,
    as_float,
    parse_utc,
)

UK_FUELS = {
    "coal": FOSSIL_SHARE,
    "gas": FOSSIL_SHARE,
    "oil": FOSSIL_SHARE,
    "nuclear": NUCLEAR_SHARE,
    "wind": RENEWABLE_SHARE,
    "solar": RENEWABLE_SHARE,
    "hydro": RENEWABLE_SHARE,
    "biomass": RENEWABLE_SHARE,
}
"""UK Carbon Intensity fuels by source; ``imports`` and ``other`` are left unclassified."""

Shares = dict[str, dict[datetime, float]]


def _empty() -> Shares:
    return {FOSSIL_SHARE: {}, NUCLEAR_SHARE: {}, RENEWABLE_SHARE: {}}


def uk_generation_mix(periods: Any) -> Shares:
    """Shares per half-hour from UK periods carrying ``generationmix: [{"fuel", "perc"}]``.

    Reads the ``/generation/{from}/{to}`` answer's list and the regional forecasts' periods
    alike; periods without a ``generationmix`` are skipped.

    Raises:
        ProviderError: a period or fuel entry of the wrong shape.
    """
    if not isinstance(periods, list):
        raise ProviderError("uk-carbon-intensity: generation 'data' is not a list of periods")
    out = _empty()
    for i, period in enumerate(periods):
        if not isinstance(period, Mapping):
            raise ProviderError(f"uk-carbon-intensity: generation period {i} is not an object")
        fuels = period.get("generationmix")
        if fuels is None:
            continue
        if not isinstance(fuels, list):
            raise ProviderError(f"uk-carbon-intensity: period {i} 'generationmix' is not a list")
        t = parse_utc(period.get("from"), f"uk-carbon-intensity generation period {i} 'from'")
        sums = dict.fromkeys(out, 0.0)
        for fuel in fuels:
            if not isinstance(fuel, Mapping):
                raise ProviderError(f"uk-carbon-intensity: period {i} fuel entry is not an object")
            kind = UK_FUELS.get(str(fuel.get("fuel", "")).lower())
            if kind is not None:
                sums[kind] += as_float(fuel.get("perc"), f"period {i} {fuel.get('fuel')} perc")
        for kind, value in sums.items():
            out[kind][t] = value
    return out


def electricitymaps_mix(payload: Any) -> Shares:
    """Shares per hour from a ``/v3/power-breakdown/history`` (or ``/latest``) answer.

    Each point: ``fossilFreePercentage`` and ``renewablePercentage`` of the consumed power,
    and ``powerConsumptionBreakdown`` (MW per source) with ``powerConsumptionTotal``: fossil is
    100 - fossil-free, renewable as given, nuclear its share of the consumption breakdown
    (else fossil-free - renewable). Points with neither percentage are skipped.

    Raises:
        ProviderError: no point list, or a point of the wrong shape.
    """
    if not isinstance(payload, Mapping):
        raise ProviderError("electricitymaps: power-breakdown answer is not an object")
    points = payload.get("history", [payload] if "datetime" in payload else None)
    if not isinstance(points, list):
        raise ProviderError("electricitymaps: power-breakdown answer has no 'history' list")
    out = _empty()
    for i, point in enumerate(points):
        if not isinstance(point, Mapping):
            raise ProviderError(f"electricitymaps: power-breakdown point {i} is not an object")
        free, renewable = point.get("fossilFreePercentage"), point.get("renewablePercentage")
        if free is None or renewable is None:
            continue
        t = parse_utc(point.get("datetime"), f"electricitymaps power-breakdown point {i}")
        free_pct = as_float(free, f"point {i} fossilFreePercentage")
        renewable_pct = as_float(renewable, f"point {i} renewablePercentage")
        nuclear_pct = max(0.0, free_pct - renewable_pct)
        breakdown, total = (
            point.get("powerConsumptionBreakdown"),
            point.get("powerConsumptionTotal"),
        )
        if isinstance(breakdown, Mapping) and breakdown.get("nuclear") is not None and total:
            total_mw = as_float(total, f"point {i} powerConsumptionTotal")
            if total_mw > 0:
                nuclear_pct = (
                    100.0 * as_float(breakdown["nuclear"], f"point {i} nuclear") / total_mw
                )
        out[FOSSIL_SHARE][t] = max(0.0, 100.0 - free_pct)
        out[RENEWABLE_SHARE][t] = renewable_pct
        out[NUCLEAR_SHARE][t] = nuclear_pct
    return out
