"""A backtest's inputs from the store's own history: received batches, forecast issues, actuals.

``gridshift backtest --store --since S --until U`` replays the service's past nights with the
same ``scheduler.backtest.backtest`` as the file mode; this module builds its five inputs:

- the fleet (``fleet.yaml`` of the settings, as every command loads it);
- the batches received in ``[since, until)``: one ``PlanningBatch`` per batch part, as the
  service plans them (``scheduler.dispatch.replan._part_batches``), with all its requests and
  ``submitted_at`` = the batch's ``created_at``; batches that never became work (``validating``,
  ``failed``, ``cancelling``, ``cancelled``) are left out;
- the forecast vintages: every issue kept in ``forecast_issues``
  (``scheduler.forecasts.history.store_issues``);
- the actuals of every site and slot of the window, per signal, in this order: carbon from the
  ``actual`` points the providers reported (``forecast_points``), else the intensity the ledger
  booked there (rows booked with a fallback factor are not actuals); price from ``actual``
  points, else the ledger's cost per grid kWh, else the newest forecast issued for the slot
  (tariffs and day-ahead prices are known beforehand); solar and WUE from ``actual`` points,
  else the newest forecast, else 0 kW and the site's WUE. ``SlotSignal.source`` says which, per
  signal.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from scheduler.contract.inputs import format_time
from scheduler.contract.vintages import Vintages
from scheduler.dispatch.expected import history_before
from scheduler.domain import BatchStatus, Fleet, PlanningBatch, SlotSignal
from scheduler.errors import InvalidInput
from scheduler.forecasts.base import ACTUAL, CARBON, PRICE, SOLAR, WUE
from scheduler.forecasts.cache import load_points
from scheduler.forecasts.history import Slotted, onto_slots, sources, store_issues
from scheduler.optimizer.arrivals import ArrivalProfile
from scheduler.slots import slot_floor
from scheduler.store.part_rows import part_rows, planning_batch
from scheduler.store.tables import Batch, BatchPart, LedgerEntry

Key = tuple[str, datetime]
KINDS = (CARBON, PRICE, SOLAR, WUE)

#: statuses of batches that were work the service had to plan
WORK_STATUSES = (
    BatchStatus.IN_PROGRESS,
    BatchStatus.FINALIZING,
    BatchStatus.COMPLETED,
    BatchStatus.EXPIRED,
)
_LISTED = 12  # missing (site, slot) pairs named in an error


class BacktestInputs(NamedTuple):
    """``scheduler.backtest.backtest``'s five inputs (from the store, or from files)."""

    fleet: Fleet
    batches: list[PlanningBatch]
    vintages: Vintages
    actual_slots: Sequence[datetime]
    actuals: dict[Key, SlotSignal]


def load_store_history(
    session: Session, fleet: Fleet, since: datetime, until: datetime, *, hold: timedelta
) -> BacktestInputs:
    """The batches, vintages and actuals of ``[since, until)`` as the store kept them.

    Args:
        session: an open session on a migrated store.
        fleet: the fleet to replay (its signal sources say where each site's series are).
        since: first slot start of the window (aware UTC, on a slot start).
        until: end of the window (exclusive, on a slot start).
        hold: how long a one-point issue holds (the planning horizon; ``onto_slots``).

    Raises:
        InvalidInput: a window not on slot starts or empty; no batch received in it; no
            usable forecast issue; or a site and slot with no actual carbon or price (the
            message lists them and says what to do).
    """
    _check_window(since, until, fleet.slot_minutes)
    batches = store_batches(session, fleet, since, until)
    issues = store_issues(session, fleet, since, until, hold=hold)
    slots, actuals = store_actuals(session, fleet, since, until, issues.latest)
    return BacktestInputs(fleet, batches, issues.vintages, slots, actuals)


def arrival_history(
    session: Session, since: datetime, profile: ArrivalProfile | None
) -> list[PlanningBatch]:
    """The batches received in the profile's history before ``since``: what the service's
    expected arrivals learned from at ``since`` (``scheduler.dispatch.expected``); none
    without a profile."""
    if profile is None:
        return []
    return history_before(session, profile, since)


def _check_window(since: datetime, until: datetime, slot_minutes: int) -> None:
    for name, t in (("--since", since), ("--until", until)):
        if slot_floor(t, slot_minutes) != t:
            raise InvalidInput(
                f"{name} {format_time(t)} is not a slot start; round it to a multiple of "
                f"{slot_minutes} min from midnight UTC, e.g. {format_time(slot_floor(t, slot_minutes))}"
            )
    if until <= since:
        raise InvalidInput(
            f"--until {format_time(until)} is not after --since {format_time(since)}"
        )


def store_batches(
    session: Session, fleet: Fleet, since: datetime, until: datetime
) -> list[PlanningBatch]:
    """One ``PlanningBatch`` per part of the batches created in ``[since, until)``.

    Raises:
        InvalidInput: none was received then.
    """
    rows = session.execute(
        part_rows()
        .where(
            Batch.created_at >= int(since.timestamp()),
            Batch.created_at < int(until.timestamp()),
            Batch.status.in_([s.value for s in WORK_STATUSES]),
        )
        .order_by(Batch.created_at, BatchPart.id)
    ).all()
    out = [planning_batch(r) for r in rows if r.requests > 0]
    if not out:
        raise InvalidInput(
            f"no batch was received between {format_time(since)} and {format_time(until)} "
            f"(statuses {', '.join(s.value for s in WORK_STATUSES)}); pick a window with work "
            "(`gridshift batches list` shows when batches were created)"
        )
    return out


def store_actuals(
    session: Session,
    fleet: Fleet,
    since: datetime,
    until: datetime,
    latest: Mapping[tuple[str, str], Mapping[datetime, float]],
) -> tuple[list[datetime], dict[Key, SlotSignal]]:
    """The actual signals of every site and slot of ``[since, until)`` (module docstring).

    ``latest[(site, kind)][slot]`` is the newest forecast issued for each slot
    (``IssueHistory.latest``).

    Raises:
        InvalidInput: some (site, slot) has no actual carbon intensity or price; every one is
            counted and the first ones named.
    """
    step = timedelta(minutes=fleet.slot_minutes)
    slots = [since + i * step for i in range(int((until - since) / step))]
    booked = _booked(session, fleet, since, until)
    out: dict[Key, SlotSignal] = {}
    missing: list[Key] = []
    for site in fleet.sites:
        actual = {k: _actual_points(session, fleet, site.name, k, slots) for k in KINDS}
        newest = {k: latest.get((site.name, k), {}) for k in KINDS}
        for t in slots:
            ledger = booked.get((site.name, t))
            carbon = _first(
                ("actual", actual[CARBON].get(t)), ("ledger", ledger[0] if ledger else None)
            )
            price = _first(
                ("actual", actual[PRICE].get(t)),
                ("ledger", ledger[1] if ledger else None),
                ("forecast", newest[PRICE].get(t)),
            )
            solar = _first(("actual", actual[SOLAR].get(t)), ("forecast", newest[SOLAR].get(t)))
            wue = _first(("actual", actual[WUE].get(t)), ("forecast", newest[WUE].get(t)))
            if carbon is None or price is None:
                missing.append((site.name, t))
                continue
            label = f"carbon={carbon[0]};price={price[0]}"
            label += f";solar={solar[0]}" if solar else ""
            label += f";wue={wue[0]}" if wue else ""
            out[(site.name, t)] = SlotSignal(
                time=t,
                site=site.name,
                carbon_g_per_kwh=max(0.0, carbon[1]),
                price_per_kwh=price[1],
                renewable_kw=max(0.0, solar[1]) if solar else 0.0,
                wue_l_per_kwh=wue[1] if wue else None,
                source=label,
            )
    if missing:
        named = ", ".join(f"{s} {format_time(t)}" for s, t in missing[:_LISTED])
        more = f" and {len(missing) - _LISTED} more" if len(missing) > _LISTED else ""
        raise InvalidInput(
            f"no actual carbon intensity or price for {len(missing)} (site, slot) pair(s) "
            f"between {format_time(since)} and {format_time(until)}: {named}{more}. Actuals "
            "come from providers that report them (kind 'actual' in forecast_points, e.g. the "
            "UK national API) and from the ledger (slots where work ran); pick a window they "
            "cover, or replay files with --actuals"
        )
    return slots, out


def _first(*options: tuple[str, float | None]) -> tuple[str, float] | None:
    """The first (label, value) with a value."""
    return next(((label, v) for label, v in options if v is not None), None)


def _actual_points(
    session: Session, fleet: Fleet, site_name: str, kind: str, slots: Sequence[datetime]
) -> Slotted:
    """The ``actual`` points of a site's signal on ``slots`` (first source with any)."""
    site = fleet.site(site_name)
    step = timedelta(minutes=fleet.slot_minutes)
    lo, end = slots[0] - timedelta(days=1), slots[-1] + step
    for provider, key in sources(session, site, kind, issues=False):
        points = load_points(session, provider, key, kind, ACTUAL, lo, end)
        if points:
            return onto_slots(points, slots, fleet.slot_minutes, step)
    return {}


def _booked(
    session: Session, fleet: Fleet, since: datetime, until: datetime
) -> dict[Key, tuple[float | None, float | None]]:
    """Per (site, slot): the carbon intensity the ledger booked (facility-energy weighted) and
    its cost per grid kWh (None without grid energy); rows booked on a fallback factor or
    persistence are left out."""
    rows = session.execute(
        select(
            LedgerEntry.site,
            LedgerEntry.started_at,
            LedgerEntry.carbon_g_per_kwh,
            LedgerEntry.facility_energy_kwh,
            LedgerEntry.grid_kwh,
            LedgerEntry.cost,
        ).where(
            LedgerEntry.site.in_([s.name for s in fleet.sites]),
            LedgerEntry.started_at >= since,
            LedgerEntry.started_at < until,
            LedgerEntry.signal_fallback.is_(None),
        )
    ).all()
    # per (site, slot): sum of carbon x energy, energy, sum of carbon, rows, grid kWh, cost
    acc: dict[Key, list[float]] = defaultdict(lambda: [0.0] * 6)
    for site, started, carbon, energy, grid, cost in rows:
        a = acc[(site, slot_floor(started, fleet.slot_minutes))]
        for i, x in enumerate((carbon * energy, energy, carbon, 1.0, grid, cost)):
            a[i] += x
    return {
        key: (
            a[0] / a[1] if a[1] > 0 else a[2] / a[3],
            a[5] / a[4] if a[4] > 0 else None,
        )
        for key, a in acc.items()
    }
