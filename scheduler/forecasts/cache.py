"""Forecast cache: fetched points in ``forecast_points`` (or in memory for pure tests).

``forecast_points`` keeps the newest value per time (what planning reads); every write of
forecasts is also recorded as an issue in ``forecast_issues`` (``scheduler.forecasts.issues``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from scheduler.domain import Site
from scheduler.forecasts.base import (
    ACTUAL,
    CARBON,
    FORECAST,
    SIGNAL_ALIASES,
    cache_key,
    normalise_signal,
    utc,
)
from scheduler.forecasts.issues import Issues, issue_rows, load_issues, record_issues
from scheduler.store.tables import ForecastPoint

_UNIQUE = ["provider", "key", "signal", "kind", "time"]


class ForecastCache(Protocol):
    """Where fetched points are kept, keyed by (provider, key, signal, kind, time)."""

    def upsert(
        self,
        provider: str,
        key: str,
        signal: str,
        kind: str,
        values: Mapping[datetime, float],
        fetched_at: datetime,
    ) -> int:
        """Insert or overwrite points (forecasts are also kept as an issue); return how many."""
        ...

    def load(
        self, provider: str, key: str, signal: str, kind: str, start: datetime, end: datetime
    ) -> dict[datetime, float]:
        """Points with ``start <= time < end``."""
        ...

    def load_stamped(
        self, provider: str, key: str, signal: str, kind: str, start: datetime, end: datetime
    ) -> dict[datetime, tuple[float, datetime]]:
        """Points with ``start <= time < end`` as ``(value, fetched_at)``."""
        ...

    def load_issues(
        self, provider: str, key: str, signal: str, start: datetime, end: datetime
    ) -> Issues:
        """Every forecast issue kept for ``start <= time < end``: ``[issued_at][time]``."""
        ...

    def last_fetched(self, provider: str, key: str, signal: str) -> datetime | None:
        """When forecasts of (provider, key, signal) were last written, if ever."""
        ...


class MemoryForecastCache:
    """An in-memory twin of ``SqlForecastCache`` for pure tests and one-off planning runs."""

    def __init__(self) -> None:
        """Start empty."""
        self.points: dict[tuple[str, str, str, str, datetime], tuple[float, datetime]] = {}
        self.issues: dict[tuple[str, str, str, datetime, datetime], float] = {}

    def upsert(
        self,
        provider: str,
        key: str,
        signal: str,
        kind: str,
        values: Mapping[datetime, float],
        fetched_at: datetime,
    ) -> int:
        """Insert or overwrite points (forecasts are also kept as an issue); return how many."""
        for t, v in values.items():
            self.points[(provider, key, signal, kind, utc(t))] = (float(v), utc(fetched_at))
            if kind == FORECAST:
                self.issues.setdefault((provider, key, signal, utc(t), utc(fetched_at)), float(v))
        return len(values)

    def load(
        self, provider: str, key: str, signal: str, kind: str, start: datetime, end: datetime
    ) -> dict[datetime, float]:
        """Points with ``start <= time < end``."""
        stamped = self.load_stamped(provider, key, signal, kind, start, end)
        return {t: v for t, (v, _) in stamped.items()}

    def load_stamped(
        self, provider: str, key: str, signal: str, kind: str, start: datetime, end: datetime
    ) -> dict[datetime, tuple[float, datetime]]:
        """Points with ``start <= time < end`` as ``(value, fetched_at)``."""
        lo, hi = utc(start), utc(end)
        return {
            t: vf
            for (p, k, s, kd, t), vf in self.points.items()
            if (p, k, s, kd) == (provider, key, signal, kind) and lo <= t < hi
        }

    def load_issues(
        self, provider: str, key: str, signal: str, start: datetime, end: datetime
    ) -> Issues:
        """Every forecast issue kept for ``start <= time < end``: ``[issued_at][time]``."""
        lo, hi = utc(start), utc(end)
        out: Issues = {}
        for (p, k, s, t, issued), v in self.issues.items():
            if (p, k, s) == (provider, key, signal) and lo <= t < hi:
                out.setdefault(issued, {})[t] = v
        return out

    def last_fetched(self, provider: str, key: str, signal: str) -> datetime | None:
        """When forecasts of (provider, key, signal) were last written, if ever."""
        stamps = [
            f
            for (p, k, s, kd, _), (_, f) in self.points.items()
            if (p, k, s, kd) == (provider, key, signal, FORECAST)
        ]
        return max(stamps, default=None)


class SqlForecastCache:
    """The cache in table ``forecast_points`` (SQLite or PostgreSQL, upsert on the unique key)."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        """Open a short transaction from ``sessions`` for each call."""
        self.sessions = sessions

    def upsert(
        self,
        provider: str,
        key: str,
        signal: str,
        kind: str,
        values: Mapping[datetime, float],
        fetched_at: datetime,
    ) -> int:
        """Insert or overwrite points in one statement; return how many were written.

        Forecasts are also recorded as an issue (``forecast_issues``) in the same transaction.
        """
        rows = [
            {
                "provider": provider,
                "key": key,
                "signal": signal,
                "kind": kind,
                "time": utc(t),
                "value": float(v),
                "fetched_at": utc(fetched_at),
            }
            for t, v in values.items()
        ]
        if not rows:
            return 0
        with self.sessions() as session, session.begin():
            upsert_points(session, rows)
            if kind == FORECAST:
                record_issues(session, issue_rows(provider, key, signal, values, fetched_at))
        return len(rows)

    def load(
        self, provider: str, key: str, signal: str, kind: str, start: datetime, end: datetime
    ) -> dict[datetime, float]:
        """Points with ``start <= time < end``."""
        with self.sessions() as session:
            return load_points(session, provider, key, signal, kind, start, end)

    def load_stamped(
        self, provider: str, key: str, signal: str, kind: str, start: datetime, end: datetime
    ) -> dict[datetime, tuple[float, datetime]]:
        """Points with ``start <= time < end`` as ``(value, fetched_at)``."""
        with self.sessions() as session:
            rows = session.execute(
                select(ForecastPoint.time, ForecastPoint.value, ForecastPoint.fetched_at).where(
                    ForecastPoint.provider == provider,
                    ForecastPoint.key == key,
                    ForecastPoint.signal == signal,
                    ForecastPoint.kind == kind,
                    ForecastPoint.time >= utc(start),
                    ForecastPoint.time < utc(end),
                )
            )
            return {utc(t): (float(v), utc(f)) for t, v, f in rows}

    def load_issues(
        self, provider: str, key: str, signal: str, start: datetime, end: datetime
    ) -> Issues:
        """Every forecast issue kept for ``start <= time < end``: ``[issued_at][time]``."""
        with self.sessions() as session:
            return load_issues(session, provider, key, signal, start, end)

    def last_fetched(self, provider: str, key: str, signal: str) -> datetime | None:
        """When forecasts of (provider, key, signal) were last written, if ever."""
        with self.sessions() as session:
            stamp = session.scalar(
                select(func.max(ForecastPoint.fetched_at)).where(
                    ForecastPoint.provider == provider,
                    ForecastPoint.key == key,
                    ForecastPoint.signal == signal,
                    ForecastPoint.kind == FORECAST,
                )
            )
        return None if stamp is None else utc(stamp)


def upsert_points(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert ``forecast_points`` rows, overwriting value and fetched_at on the unique key.

    Uses ``INSERT ... ON CONFLICT DO UPDATE`` (SQLite >= 3.24 and PostgreSQL alike).
    """
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(ForecastPoint)
    stmt = stmt.on_conflict_do_update(
        index_elements=_UNIQUE,
        set_={"value": stmt.excluded.value, "fetched_at": stmt.excluded.fetched_at},
    )
    session.execute(stmt, rows)


def load_points(
    session: Session,
    provider: str,
    key: str,
    signal: str,
    kind: str,
    start: datetime,
    end: datetime,
) -> dict[datetime, float]:
    """Read points of one (provider, key, signal, kind) with ``start <= time < end``."""
    rows = session.execute(
        select(ForecastPoint.time, ForecastPoint.value).where(
            ForecastPoint.provider == provider,
            ForecastPoint.key == key,
            ForecastPoint.signal == signal,
            ForecastPoint.kind == kind,
            ForecastPoint.time >= utc(start),
            ForecastPoint.time < utc(end),
        )
    )
    return {utc(t): float(v) for t, v in rows}


@dataclass(frozen=True, slots=True)
class ForecastVsActual:
    """One point of a site's signal: the last forecast kept for it and the actual, if known."""

    time: datetime
    forecast: float | None
    actual: float | None
    provider: str


def forecast_vs_actual(
    session: Session, site: Site, start: datetime, end: datetime, *, signal: str = CARBON
) -> list[ForecastVsActual]:
    """The cached forecast and actual values of ``site``'s ``signal`` in ``[start, end)``.

    Only providers that report actuals (the UK national API) fill ``actual``; the forecast is
    the latest one fetched for that time. Times are the provider's native interval starts.

    Returns:
        Points sorted by time; empty when the site has no source for ``signal`` or nothing is
        cached.
    """
    kind = normalise_signal(signal)
    source = next(
        (s for name, s in site.signals.items() if SIGNAL_ALIASES.get(name, name) == kind), None
    )
    if source is None:
        return []
    key = cache_key(site.name, source.options)
    forecast = load_points(session, source.provider, key, kind, FORECAST, start, end)
    actual = load_points(session, source.provider, key, kind, ACTUAL, start, end)
    return [
        ForecastVsActual(t, forecast.get(t), actual.get(t), source.provider)
        for t in sorted(set(forecast) | set(actual))
    ]
