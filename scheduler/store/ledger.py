"""Ledger queries: sums of ``ledger_entries`` per batch, tenant, site or period."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Numeric, cast, func, select
from sqlalchemy.orm import Session

from scheduler.domain import is_estimate
from scheduler.store.tables import LedgerEntry

_SUMMED = (
    "requests_done",
    "requests_failed",
    "input_tokens",
    "output_tokens",
    "gpu_hours",
    "it_energy_kwh",
    "facility_energy_kwh",
    "grid_kwh",
    "co2_location_g",
    "embodied_co2_g",
    "water_onsite_l",
    "water_offsite_l",
    "cost",
)
_NULLABLE = (
    "planned_energy_kwh",
    "planned_co2_g",
    "planned_water_l",
    "planned_cost",
)


@dataclass(frozen=True, slots=True)
class LedgerTotals:
    """Sums over ledger rows (one row per finished execution attempt).

    ``co2_g`` is location-based operational plus embodied CO2; ``co2_market_g`` is the
    market-based figure by the one rule (``market_based_g``: each row's, or its location-based
    figure for rows booked before every row had one); None without rows; ``estimated`` is True when any row's energy was estimated
    (then every derived figure is an estimate too).
    """

    executions: int = 0
    requests_done: int = 0
    requests_failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    gpu_hours: float = 0.0
    it_energy_kwh: float = 0.0
    facility_energy_kwh: float = 0.0
    renewable_kwh: float = 0.0
    grid_kwh: float = 0.0
    co2_location_g: float = 0.0
    co2_market_g: float | None = None
    embodied_co2_g: float = 0.0
    co2_g: float = 0.0
    water_onsite_l: float = 0.0
    water_offsite_l: float = 0.0
    water_l: float = 0.0
    cost: float = 0.0
    planned_energy_kwh: float | None = None
    planned_co2_g: float | None = None
    planned_water_l: float | None = None
    planned_cost: float | None = None
    energy_methods: tuple[str, ...] = ()
    carbon_sources: tuple[str, ...] = ()
    estimated: bool = False
    first_started_at: datetime | None = None
    last_ended_at: datetime | None = None
    sites: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (times as ISO-8601)."""
        d = asdict(self)
        for k in ("first_started_at", "last_ended_at"):
            d[k] = d[k].isoformat() if d[k] else None
        d["energy_methods"] = list(self.energy_methods)
        d["carbon_sources"] = list(self.carbon_sources)
        d["sites"] = list(self.sites)
        return d


def _filters(
    batch_id: str | None,
    tenant_id: str | None,
    site: str | None,
    start: datetime | None,
    end: datetime | None,
) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = []
    if batch_id is not None:
        conds.append(LedgerEntry.batch_id == batch_id)
    if tenant_id is not None:
        conds.append(LedgerEntry.tenant_id == tenant_id)
    if site is not None:
        conds.append(LedgerEntry.site == site)
    if start is not None:
        conds.append(LedgerEntry.started_at >= start)
    if end is not None:
        conds.append(LedgerEntry.started_at < end)
    return conds


def ledger_totals(
    session: Session,
    *,
    batch_id: str | None = None,
    tenant_id: str | None = None,
    site: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> LedgerTotals:
    """Sum the ledger rows matching every given filter (``start <= started_at < end``).

    Args:
        session: open session.
        batch_id: one batch.
        tenant_id: one tenant.
        site: one site.
        start: period start (aware UTC), inclusive.
        end: period end (aware UTC), exclusive.

    Returns:
        The totals (all zero when nothing matches).
    """
    conds = _filters(batch_id, tenant_id, site, start, end)
    cols: list[Any] = [func.count(LedgerEntry.id)]
    cols += [func.coalesce(func.sum(getattr(LedgerEntry, c)), 0) for c in _SUMMED]
    cols += [func.sum(func.coalesce(LedgerEntry.co2_market_g, LedgerEntry.co2_location_g))]
    cols += [func.sum(getattr(LedgerEntry, c)) for c in _NULLABLE]
    cols += [func.min(LedgerEntry.started_at), func.max(LedgerEntry.ended_at)]
    row = session.execute(select(*cols).where(*conds)).one()
    n = int(row[0])
    if n == 0:
        return LedgerTotals()
    summed = dict(zip(_SUMMED, row[1 : 1 + len(_SUMMED)], strict=True))
    market_g = row[1 + len(_SUMMED)]
    nullable = dict(
        zip(_NULLABLE, row[2 + len(_SUMMED) : 2 + len(_SUMMED) + len(_NULLABLE)], strict=True)
    )
    first: datetime | None = row[-2]
    last: datetime | None = row[-1]
    labels = session.execute(
        select(LedgerEntry.energy_method, LedgerEntry.carbon_source, LedgerEntry.site)
        .where(*conds)
        .distinct()
    ).all()
    methods = tuple(sorted({m for m, _, _ in labels}))
    facility = float(summed["facility_energy_kwh"])
    grid = float(summed["grid_kwh"])
    onsite, offsite = float(summed["water_onsite_l"]), float(summed["water_offsite_l"])
    location, embodied = float(summed["co2_location_g"]), float(summed["embodied_co2_g"])
    return LedgerTotals(
        executions=n,
        requests_done=int(summed["requests_done"]),
        requests_failed=int(summed["requests_failed"]),
        input_tokens=int(summed["input_tokens"]),
        output_tokens=int(summed["output_tokens"]),
        gpu_hours=float(summed["gpu_hours"]),
        it_energy_kwh=float(summed["it_energy_kwh"]),
        facility_energy_kwh=facility,
        renewable_kwh=max(0.0, facility - grid),
        grid_kwh=grid,
        co2_location_g=location,
        co2_market_g=float(market_g),
        embodied_co2_g=embodied,
        co2_g=location + embodied,
        water_onsite_l=onsite,
        water_offsite_l=offsite,
        water_l=onsite + offsite,
        cost=float(summed["cost"]),
        planned_energy_kwh=_opt(nullable["planned_energy_kwh"]),
        planned_co2_g=_opt(nullable["planned_co2_g"]),
        planned_water_l=_opt(nullable["planned_water_l"]),
        planned_cost=_opt(nullable["planned_cost"]),
        energy_methods=methods,
        carbon_sources=tuple(sorted({c for _, c, _ in labels})),
        estimated=any(is_estimate(m) for m in methods),  # estimated-profile too
        first_started_at=first,
        last_ended_at=last,
        sites=tuple(sorted({s for _, _, s in labels})),
    )


def _opt(value: Any) -> float | None:
    return None if value is None else float(value)


def ledger_by(
    session: Session,
    key: str,
    *,
    tenant_id: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> dict[str, LedgerTotals]:
    """Totals grouped by ``key``: ``batch_id``, ``tenant_id``, ``site``, ``pool`` or ``model``.

    Raises:
        ValueError: ``key`` is not one of those columns.
    """
    if key not in ("batch_id", "tenant_id", "site", "pool", "model"):
        raise ValueError(
            f"cannot group the ledger by {key!r}; use batch_id, tenant_id, site, pool or model"
        )
    conds = _filters(None, tenant_id, None, start, end)
    values = session.scalars(select(getattr(LedgerEntry, key)).where(*conds).distinct()).all()
    out = {}
    for v in values:
        filt: dict[str, Any] = {"tenant_id": tenant_id, "start": start, "end": end}
        if key in ("batch_id", "tenant_id", "site"):
            filt[key] = v
            out[str(v)] = ledger_totals(session, **filt)
        else:
            out[str(v)] = _totals_where(session, getattr(LedgerEntry, key) == v, conds)
    return out


def _totals_where(
    session: Session, cond: ColumnElement[bool], conds: list[ColumnElement[bool]]
) -> LedgerTotals:
    # Pool and model are not ledger_totals filters: sum the few rows in Python.
    rows = session.scalars(select(LedgerEntry).where(cond, *conds)).all()
    facility = sum(r.facility_energy_kwh for r in rows)
    grid = sum(r.grid_kwh for r in rows)
    location = sum(r.co2_location_g for r in rows)
    embodied = sum(r.embodied_co2_g for r in rows)
    methods = tuple(sorted({r.energy_method for r in rows}))
    return LedgerTotals(
        executions=len(rows),
        requests_done=sum(r.requests_done for r in rows),
        requests_failed=sum(r.requests_failed for r in rows),
        gpu_hours=sum(r.gpu_hours for r in rows),
        it_energy_kwh=sum(r.it_energy_kwh for r in rows),
        facility_energy_kwh=facility,
        renewable_kwh=max(0.0, facility - grid),
        grid_kwh=grid,
        co2_location_g=location,
        embodied_co2_g=embodied,
        co2_g=location + embodied,
        water_onsite_l=sum(r.water_onsite_l for r in rows),
        water_offsite_l=sum(r.water_offsite_l for r in rows),
        water_l=sum(r.water_onsite_l + r.water_offsite_l for r in rows),
        co2_market_g=market_based_g(rows),
        cost=sum(r.cost for r in rows),
        energy_methods=methods,
        estimated=any(is_estimate(m) for m in methods),  # estimated-profile too
    )


def market_based_g(rows: Sequence[LedgerEntry]) -> float:
    """Market-based scope 2 CO2 of ledger rows, grams: the one rule every view uses.

    Each row's ``co2_market_g`` (instruments, residual mix, else the location-based factor,
    as ``market_basis`` says); rows booked before every row carried one count their
    location-based figure (the GHG Protocol's fallback), as the SQL sums do with COALESCE.
    """
    return math.fsum(
        r.co2_market_g if r.co2_market_g is not None else r.co2_location_g for r in rows
    )


def spent_g(s: Session, start: datetime, end: datetime, tenant_id: str | None = None) -> float:
    """Booked CO2 in ``[start, end)`` on ``started_at``: location-based plus embodied, grams.

    The one spent-carbon query: the pacer, the planner's cap and the budget view all use it.

    Args:
        s: an open session.
        start: aware UTC start (inclusive).
        end: aware UTC end (exclusive).
        tenant_id: only this tenant's entries (``None``: the whole fleet).
    """
    q = select(LedgerEntry.co2_location_g, LedgerEntry.embodied_co2_g).where(
        LedgerEntry.started_at >= start, LedgerEntry.started_at < end
    )
    if tenant_id is not None:
        q = q.where(LedgerEntry.tenant_id == tenant_id)
    return math.fsum(a + b for a, b in s.execute(q).all())


def seconds_between(s: Session, start: Any, end: Any) -> ColumnElement[float]:
    """``end - start`` in seconds as a SQL expression, in SQLite's or PostgreSQL's dialect."""
    if s.get_bind().dialect.name == "sqlite":
        # julianday is a float of days: round to the millisecond it can resolve
        return func.round((func.julianday(end) - func.julianday(start)) * 86400.0, 3)
    seconds: ColumnElement[float] = func.round(cast(func.extract("epoch", end - start), Numeric), 3)
    return seconds
