"""Forecast issues: every forecast written to the cache, kept by issue time (``forecast_issues``).

``forecast_points`` keeps the newest value per slot (what planning reads); ``forecast_issues``
keeps each write of a forecast as an issue, ``issued_at`` being the cache's ``fetched_at``, so a
backtest can ask what was known at any past time (``scheduler.backtest_store``) and a plan's
``signal_issued_at`` names the issue it used. Rows are never updated: writing the same issue
again changes nothing. The retention sweep deletes issues older than
``forecast_issue_retention_days``.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from scheduler.forecasts.base import utc
from scheduler.store.tables import ForecastIssue

_UNIQUE = ["provider", "key", "signal", "time", "issued_at"]

Issues = dict[datetime, dict[datetime, float]]
"""``issues[issued_at][time] = value`` of one (provider, key, signal)."""


def issue_rows(
    provider: str, key: str, signal: str, values: Mapping[datetime, float], issued_at: datetime
) -> list[dict[str, Any]]:
    """The ``forecast_issues`` rows of one write of forecasts (times and issue as aware UTC)."""
    stamp = utc(issued_at)
    return [
        {
            "provider": provider,
            "key": key,
            "signal": signal,
            "time": utc(t),
            "issued_at": stamp,
            "value": float(v),
        }
        for t, v in values.items()
    ]


def record_issues(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert issue rows; a row already recorded (same issue of the same point) is left as is.

    Uses ``INSERT ... ON CONFLICT DO NOTHING`` (SQLite >= 3.24 and PostgreSQL alike).
    """
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(insert(ForecastIssue).on_conflict_do_nothing(index_elements=_UNIQUE), rows)


def load_issues(
    session: Session,
    provider: str,
    key: str,
    signal: str,
    start: datetime,
    end: datetime,
    *,
    issued_before: datetime | None = None,
) -> Issues:
    """Every issue of one (provider, key, signal) for times ``start <= time < end``.

    Args:
        issued_before: only issues with ``issued_at < issued_before`` (default: all).

    Returns:
        ``issues[issued_at][time] = value``, times aware UTC.
    """
    q = select(ForecastIssue.issued_at, ForecastIssue.time, ForecastIssue.value).where(
        ForecastIssue.provider == provider,
        ForecastIssue.key == key,
        ForecastIssue.signal == signal,
        ForecastIssue.time >= utc(start),
        ForecastIssue.time < utc(end),
    )
    if issued_before is not None:
        q = q.where(ForecastIssue.issued_at < utc(issued_before))
    out: Issues = defaultdict(dict)
    for issued, t, v in session.execute(q):
        out[utc(issued)][utc(t)] = float(v)
    return dict(out)


def delete_issues_before(session: Session, cutoff: datetime) -> int:
    """Delete issues with ``issued_at < cutoff``; return how many rows went.

    Looks first, so that a sweep with nothing to delete takes no write lock (SQLite).
    """
    old = select(ForecastIssue.id).where(ForecastIssue.issued_at < utc(cutoff)).limit(1)
    if session.scalar(old) is None:
        return 0
    res = session.execute(
        delete(ForecastIssue)
        .where(ForecastIssue.issued_at < utc(cutoff))
        .execution_options(synchronize_session=False)
    )
    return int(getattr(res, "rowcount", 0) or 0)


def slot_issue_times(
    stamps: Mapping[datetime, datetime],
    step: timedelta,
    slots: Iterable[datetime],
    slot_minutes: int,
) -> dict[datetime, datetime]:
    """Per slot, the oldest issue time among the points whose interval overlaps it.

    ``stamps`` maps each point's time (an interval ``[t, t + step)``, as ``resample`` reads it)
    to the issue it came from; a value resampled onto a slot is as old as its oldest part.

    Returns:
        slot start -> issue time, for the slots some point overlaps.
    """
    points = sorted(stamps.items())
    starts = [t for t, _ in points]
    slot_len = timedelta(minutes=slot_minutes)
    out: dict[datetime, datetime] = {}
    for slot in slots:
        i = max(0, bisect.bisect_right(starts, slot) - 1)
        found: list[datetime] = []
        while i < len(points) and points[i][0] < slot + slot_len:
            t, issued = points[i]
            if t + step > slot:
                found.append(issued)
            i += 1
        if found:
            out[slot] = min(found)
    return out
