"""Forecast vintages (planning-formats.md section 2, extension): every issue of the signals.

A vintages file is a ``forecasts.csv`` with ``issued_at`` first; each row is the value forecast at
``issued_at`` for slot ``time`` at ``site``. A decision taken at time ``h`` may only use rows with
``issued_at <= h``: ``Vintages.known_at(h)`` is the one way to read them, so a backtest cannot
peek. Readers of plain forecasts files are unaffected (``read_forecasts`` is unchanged).
"""

from __future__ import annotations

import bisect
import csv
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from scheduler.contract.inputs import (
    FORECAST_COLUMNS,
    _forecast_row,
    _summary,
    format_time,
    parse_time,
)
from scheduler.domain import Fleet, SlotSignal
from scheduler.errors import InvalidInput, LineError

VINTAGE_COLUMNS = ("issued_at", *FORECAST_COLUMNS)
_MAX_REPORTED_ERRORS = 50

Key = tuple[str, datetime]


@dataclass(frozen=True, slots=True)
class Vintages:
    """Every issue of the signals: ``issues[issued_at][(site, slot)]`` (issue times ascending).

    Each signal carries its issue time (``SlotSignal.issued_at``): the issue it is filed under
    unless it already has one (the store's loader keeps the exact fetch time).
    """

    slot_minutes: int
    issues: Mapping[datetime, Mapping[Key, SlotSignal]]
    _times: tuple[datetime, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        stamped = {
            issued: {
                k: s if s.issued_at is not None else replace(s, issued_at=issued)
                for k, s in signals.items()
            }
            for issued, signals in self.issues.items()
        }
        object.__setattr__(self, "issues", stamped)
        object.__setattr__(self, "_times", tuple(sorted(stamped)))

    @property
    def issue_times(self) -> tuple[datetime, ...]:
        """The issue times, ascending."""
        return self._times

    def issued_by(self, h: datetime) -> tuple[datetime, ...]:
        """The issue times at or before ``h`` (ascending)."""
        return self._times[: bisect.bisect_right(self._times, h)]

    def vintage_at(self, h: datetime) -> datetime | None:
        """The newest issue time at or before ``h`` (``None`` before the first issue)."""
        known = self.issued_by(h)
        return known[-1] if known else None

    def known_at(self, h: datetime) -> dict[Key, tuple[datetime, SlotSignal]]:
        """What was known at ``h``: per (site, slot), the newest value issued at or before ``h``.

        Values carry the issue time they come from, beside them and in the signal
        (``SlotSignal.issued_at``): a plan records which vintage it used.
        An issue whose horizon is shorter than an older one's leaves the older value for the
        slots it does not cover (the last value seen is the best known).
        """
        out: dict[Key, tuple[datetime, SlotSignal]] = {}
        for issued in self.issued_by(h):
            for key, signal in self.issues[issued].items():
                out[key] = (issued, signal)
        return out

    def signals_at(
        self, h: datetime, slots: Sequence[datetime], fleet: Fleet
    ) -> dict[Key, SlotSignal]:
        """The signals known at ``h`` for every site and each of ``slots``.

        Raises:
            InvalidInput: a site and slot with no value issued by ``h`` (the first is named).
        """
        known = self.known_at(h)
        out: dict[Key, SlotSignal] = {}
        for t in slots:
            for site in fleet.sites:
                hit = known.get((site.name, t))
                if hit is None:
                    raise InvalidInput(
                        f"no forecast issued by {format_time(h)} covers site {site.name} at "
                        f"slot {format_time(t)}; add an issue at or before {format_time(h)} "
                        "that covers it, or shorten the horizon"
                    )
                out[(site.name, t)] = hit[1]
        return out


def read_vintages(path: str | Path, fleet: Fleet) -> Vintages:
    """Read a vintages file: ``issued_at`` then the forecasts file's columns.

    ``issued_at`` must start a slot (a decision at a slot start may use it) and no row may be
    for a slot before its own ``issued_at``. An issue may cover fewer sites or slots than
    others; gaps are reported where a decision needs the value (``Vintages.signals_at``).

    Raises:
        InvalidInput: unreadable file, missing column, a bad row (as ``read_forecasts``), an
            ``issued_at`` not on a slot start, a row before its issue time, a duplicate
            (issued_at, site, time), or no rows. ``errors`` holds every bad line's number.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise InvalidInput(f"cannot read vintages file {p}: {e.strerror}") from e
    reader = csv.DictReader(text.splitlines())
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in VINTAGE_COLUMNS if c not in header]
    if missing:
        raise InvalidInput(
            f"{p}: missing column(s) {', '.join(missing)}; a vintages file is a forecasts file "
            f"with issued_at first: {','.join(VINTAGE_COLUMNS)}[,wue_l_per_kwh]",
            [LineError(1, "missing_column", f"missing {c}", c) for c in missing],
        )
    reader.fieldnames = header
    sites = {s.name for s in fleet.sites}
    issues: dict[datetime, dict[Key, SlotSignal]] = {}
    errors: list[LineError] = []
    for line, row in enumerate(reader, start=2):
        try:
            issued, signal = _vintage_row(row, sites, fleet.slot_minutes)
        except ValueError as e:
            errors.append(LineError(line, "invalid_row", str(e)))
            continue
        issue = issues.setdefault(issued, {})
        key = (signal.site, signal.time)
        if key in issue:
            errors.append(
                LineError(
                    line,
                    "duplicate",
                    f"second row issued at {format_time(issued)} for {key[0]} at "
                    f"{format_time(key[1])}",
                )
            )
            continue
        issue[key] = signal
    if errors:
        raise InvalidInput(_summary(p, errors), errors[:_MAX_REPORTED_ERRORS])
    if not issues:
        raise InvalidInput(f"{p}: no rows; give at least one issue of the signals")
    return Vintages(fleet.slot_minutes, issues)


def _vintage_row(
    row: Mapping[str, Any], sites: set[str], slot_minutes: int
) -> tuple[datetime, SlotSignal]:
    issued = parse_time(row.get("issued_at"), "issued_at")
    if issued.second or issued.microsecond or (issued.hour * 60 + issued.minute) % slot_minutes:
        raise ValueError(
            f"issued_at {format_time(issued)} is not a slot start: round it UP to the next "
            f"slot start ({slot_minutes} min from midnight UTC), when a decision can first use it"
        )
    signal = _forecast_row(row, sites, slot_minutes)
    if signal.time < issued:
        raise ValueError(
            f"slot {format_time(signal.time)} is before its issued_at {format_time(issued)}; "
            "an issue covers the slots from its issue time on (drop the earlier rows)"
        )
    return issued, signal


def write_vintages(
    vintages: Vintages | Iterable[tuple[datetime, SlotSignal]], path: str | Path
) -> Path:
    """Write a vintages file sorted by issue time, slot and site (``wue`` only when given).

    Returns:
        The path written.
    """
    if isinstance(vintages, Vintages):
        rows = [(i, s) for i in vintages.issue_times for s in vintages.issues[i].values()]
    else:
        rows = list(vintages)
    rows.sort(key=lambda r: (r[0], r[1].time, r[1].site))
    with_wue = any(s.wue_l_per_kwh is not None for _, s in rows)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(VINTAGE_COLUMNS + (("wue_l_per_kwh",) if with_wue else ()))
        for issued, s in rows:
            line: list[Any] = [
                format_time(issued),
                format_time(s.time),
                s.site,
                repr(float(s.carbon_g_per_kwh)),
                repr(float(s.price_per_kwh)),
                repr(float(s.renewable_kw)),
            ]
            if with_wue:
                line.append("" if s.wue_l_per_kwh is None else repr(float(s.wue_l_per_kwh)))
            writer.writerow(line)
    return out


def ceil_to_slot(t: datetime, slot_minutes: int) -> datetime:
    """The first slot start at or after ``t`` (when a decision can first use an issue at ``t``)."""
    t = t.astimezone(UTC)
    midnight = t.replace(hour=0, minute=0, second=0, microsecond=0)
    step = timedelta(minutes=slot_minutes)
    n = -(-(t - midnight) // step)
    return midnight + n * step
