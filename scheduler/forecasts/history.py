"""What the store knew when: its kept forecast issues as ``Vintages``, and its cached series.

The service writes every fetch of a site's signal to the cache under the source's (provider,
key) (``scheduler.forecasts.service``) and keeps each write as an issue (``forecast_issues``).
Read back here per site and signal kind, from the first source holding data in this order: the
source ``fleet.yaml`` configures, its ``fallback``, then any other provider cached under the
site's key (the demo's ``demo`` provider, a source renamed since).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from scheduler.contract.inputs import format_time
from scheduler.contract.vintages import Vintages, ceil_to_slot
from scheduler.domain import Fleet, Site, SlotSignal
from scheduler.errors import InvalidInput
from scheduler.forecasts.base import CARBON, PRICE, SOLAR, WUE, Series, cache_key, resample
from scheduler.forecasts.issues import load_issues
from scheduler.forecasts.service import ALIASES, carbon_factor_of_site, site_source
from scheduler.store.tables import ForecastIssue, ForecastPoint

KINDS = (CARBON, PRICE, SOLAR, WUE)
Key = tuple[str, datetime]
Slotted = dict[datetime, float]


def sources(session: Session, site: Site, kind: str, *, issues: bool) -> Iterator[tuple[str, str]]:
    """Candidate (provider, key) pairs of a site's signal, in the order of the module docstring.

    Lazy: the other providers are looked up (a scan of the table) only when the configured
    source and its fallback are exhausted.

    Args:
        issues: look for other providers in ``forecast_issues`` (else in ``forecast_points``).
    """
    seen: list[tuple[str, str]] = []
    source = site_source(site, kind)
    if source is not None:
        seen.append(
            (ALIASES.get(source.provider, source.provider), cache_key(site.name, source.options))
        )
        raw = source.options.get("fallback")
        if isinstance(raw, str) and raw:
            seen.append((ALIASES.get(raw, raw), cache_key(site.name, {})))
        elif isinstance(raw, Mapping) and raw.get("provider"):
            opts = {k: v for k, v in raw.items() if k != "provider"}
            name = str(raw["provider"])
            seen.append((ALIASES.get(name, name), cache_key(site.name, opts)))
    yield from seen
    table = ForecastIssue if issues else ForecastPoint
    others = session.execute(
        select(table.provider, table.key).where(table.signal == kind).distinct()
    ).all()
    for provider, key in sorted((p, k) for p, k in others):
        if (key == site.name or key.startswith(f"{site.name}|")) and (provider, key) not in seen:
            yield provider, key


def onto_slots(
    points: Mapping[datetime, float], slots: Sequence[datetime], slot_minutes: int, hold: timedelta
) -> Slotted:
    """Resample one series (one issue, or cached points) onto ``slots``.

    The step is the smallest gap between points; a series of one point (the ``constant``
    provider writes one point per fetch) holds it for ``hold`` (the planning horizon).
    """
    if not points:
        return {}
    times = sorted(points)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    step = min(gaps) if gaps else hold
    return resample(Series(dict(points), step), slots, slot_minutes)


@dataclass(frozen=True, slots=True)
class IssueHistory:
    """The store's forecast issues for a window: as vintages, and the newest value per slot.

    Attributes:
        vintages: what was known when (``store_issues``).
        latest: ``latest[(site, kind)][slot]``: the value of the newest issue covering that
            slot, issued before the window's end (kinds ``carbon``, ``price``, ``solar``,
            ``wue``).
    """

    vintages: Vintages
    latest: Mapping[tuple[str, str], Mapping[datetime, float]]


def store_issues(
    session: Session, fleet: Fleet, since: datetime, until: datetime, *, hold: timedelta
) -> IssueHistory:
    """The forecast issues kept in the store, for the slots of ``[since, until)``.

    Each issue counts from the first slot start at or after its ``issued_at`` (``ceil_to_slot``:
    a fetch at 00:07 is usable from 01:00, the contract's rule for vintages files); several
    fetches within one slot are applied in order, the newest winning. The vintage in force at
    ``since`` holds every slot known then; each later one the (site, slot) pairs its issues
    changed. A (site, slot) needs a carbon and a price value; solar is 0 kW and WUE the site's
    own when no issue gives them. ``SlotSignal.issued_at`` is the exact fetch time, the oldest
    of the signal's parts.

    Raises:
        InvalidInput: the store holds no issue usable for the window (the message says why and
            what to do).
    """
    step = timedelta(minutes=fleet.slot_minutes)
    slots = [since + i * step for i in range(int((until - since) / step))]
    events: dict[datetime, list[tuple[datetime, str, str, Slotted]]] = defaultdict(list)
    for site in fleet.sites:
        for kind in KINDS:
            for provider, key in sources(session, site, kind, issues=True):
                found = load_issues(
                    session, provider, key, kind, since - timedelta(days=1), until,
                    issued_before=until,
                )  # fmt: skip
                for issued, points in found.items():
                    values = onto_slots(points, slots, fleet.slot_minutes, hold)
                    events[ceil_to_slot(issued, fleet.slot_minutes)].append(
                        (issued, site.name, kind, values)
                    )
                if found:
                    break
    if not events:
        raise InvalidInput(
            f"the store holds no forecast issues for the fleet's sites issued before "
            f"{format_time(until)} (table forecast_issues, filled by every forecast fetch since "
            "migration 0008; kept GRIDSHIFT_FORECAST_ISSUE_RETENTION_DAYS days): pick a later "
            "window, or replay files with --fleet/--batches/--vintages/--actuals"
        )
    times = sorted(events)
    known_then = [v for v in times if v <= since]
    first = known_then[-1] if known_then else times[0]
    factor = {s.name: carbon_factor_of_site(fleet, s.name) for s in fleet.sites}
    every = [(s.name, t) for s in fleet.sites for t in slots]
    cur: dict[tuple[str, str], dict[datetime, tuple[float, datetime]]] = defaultdict(dict)
    out: dict[datetime, dict[Key, SlotSignal]] = {}
    for v in times:
        changed: set[Key] = set()
        for issued, site_name, kind, values in sorted(events[v], key=lambda e: e[0]):
            for t, x in values.items():
                cur[(site_name, kind)][t] = (x, issued)
                changed.add((site_name, t))
        if v < first:
            continue
        issue: dict[Key, SlotSignal] = {}
        for site_name, t in every if v == first else sorted(changed):
            sig = _signal(cur, site_name, t, factor[site_name]) if t >= v else None
            if sig is not None:
                issue[(site_name, t)] = sig
        if issue:
            out[v] = issue
    if not out:
        raise InvalidInput(
            f"no forecast issue in the store gives both carbon and price for any site between "
            f"{format_time(since)} and {format_time(until)}; check the sites' signals in "
            "fleet.yaml against what was fetched, or pick another window"
        )
    latest = {k: {t: v for t, (v, _) in values.items()} for k, values in cur.items()}
    return IssueHistory(Vintages(fleet.slot_minutes, out), latest)


def _signal(
    cur: Mapping[tuple[str, str], Mapping[datetime, tuple[float, datetime]]],
    site: str,
    t: datetime,
    carbon_factor: str,
) -> SlotSignal | None:
    parts = {k: cur.get((site, k), {}).get(t) for k in KINDS}
    carbon, price, solar, wue = (parts[k] for k in KINDS)
    if carbon is None or price is None:
        return None
    return SlotSignal(
        time=t,
        site=site,
        carbon_g_per_kwh=max(0.0, carbon[0]),
        price_per_kwh=price[0],
        renewable_kw=max(0.0, solar[0]) if solar is not None else 0.0,
        wue_l_per_kwh=wue[0] if wue is not None else None,
        source="forecast_issues",
        carbon_factor=carbon_factor,
        issued_at=min(p[1] for p in parts.values() if p is not None),
    )
