"""Purchased grid electricity split by source (ESRS E1-5) from the cached generation mix.

A ledger row's grid energy is split by the mix of the grid at the time it ran: the
``fossil_share``, ``nuclear_share`` and ``renewable_share`` signals (percent) cached for its
site (``signals.mix``: UK Carbon Intensity ``generationmix``, Electricity Maps power
breakdown, or CSV columns), taking for each the latest point at or before the row's start and
no older than ``MAX_AGE`` (an actual beats a forecast). A row with no mix is reported apart, as
of unknown mix, and counted; the share of a known mix that its source does not classify
(imports, "other", "unknown") is reported as unclassified, never guessed.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from scheduler.forecasts.base import FOSSIL_SHARE, MIX_KINDS, NUCLEAR_SHARE, RENEWABLE_SHARE, utc
from scheduler.review.signals import keys_of, site_of
from scheduler.store.tables import ForecastPoint, LedgerEntry

MAX_AGE = timedelta(hours=1)
"""How old a mix point may be at a row's start (the providers give half-hourly or hourly)."""

_RANK = {"actual": 2, "forecast": 1}


@dataclass(frozen=True, slots=True)
class GridMixSplit:
    """Purchased grid energy (kWh) by source, and how many rows had a mix."""

    fossil_kwh: float = 0.0
    nuclear_kwh: float = 0.0
    renewable_kwh: float = 0.0
    unclassified_kwh: float = 0.0
    unknown_mix_kwh: float = 0.0
    rows_with_mix: int = 0
    rows_without_mix: int = 0


def _series(
    session: Session, rows: Sequence[LedgerEntry]
) -> dict[tuple[str, str], list[tuple[datetime, float]]]:
    starts = [utc(r.started_at) for r in rows]
    q = select(ForecastPoint).where(
        ForecastPoint.signal.in_(MIX_KINDS),
        keys_of({r.site for r in rows}),
        ForecastPoint.time >= min(starts) - MAX_AGE,
        ForecastPoint.time <= max(starts),
    )
    best: dict[tuple[str, str, datetime], tuple[int, datetime, float]] = {}
    for p in session.scalars(q):
        k = (site_of(p.key), p.signal, utc(p.time))
        rank = (_RANK.get(p.kind, 0), utc(p.fetched_at), p.value)
        if k not in best or rank[:2] > best[k][:2]:
            best[k] = rank
    out: dict[tuple[str, str], list[tuple[datetime, float]]] = defaultdict(list)
    for (site, signal, t), rank in sorted(best.items()):
        out[(site, signal)].append((t, rank[2]))
    return out


def _at(points: list[tuple[datetime, float]], t: datetime) -> float | None:
    i = bisect.bisect_right([p[0] for p in points], t) - 1
    if i < 0 or t - points[i][0] > MAX_AGE:
        return None
    return points[i][1]


def grid_mix_split(session: Session, rows: Sequence[LedgerEntry]) -> GridMixSplit:
    """Split the rows' grid energy by the cached generation mix (see the module docstring)."""
    if not rows:
        return GridMixSplit()
    series = _series(session, rows)
    parts: dict[str, list[float]] = defaultdict(list)
    with_mix = 0
    for r in rows:
        t = utc(r.started_at)
        shares = [_at(series.get((r.site, k), []), t) for k in MIX_KINDS]
        if any(s is None for s in shares):
            parts["unknown"].append(r.grid_kwh)
            continue
        with_mix += 1
        pct = dict(zip(MIX_KINDS, (max(0.0, s or 0.0) for s in shares), strict=True))
        scale = max(100.0, math.fsum(pct.values()))  # never more than the whole row
        for k in MIX_KINDS:
            parts[k].append(r.grid_kwh * pct[k] / scale)
        parts["unclassified"].append(r.grid_kwh * (1.0 - math.fsum(pct.values()) / scale))
    return GridMixSplit(
        fossil_kwh=math.fsum(parts[FOSSIL_SHARE]),
        nuclear_kwh=math.fsum(parts[NUCLEAR_SHARE]),
        renewable_kwh=math.fsum(parts[RENEWABLE_SHARE]),
        unclassified_kwh=math.fsum(parts["unclassified"]),
        unknown_mix_kwh=math.fsum(parts["unknown"]),
        rows_with_mix=with_mix,
        rows_without_mix=len(rows) - with_mix,
    )
