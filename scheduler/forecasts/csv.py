"""CSV files as providers: ``forecasts.csv`` itself, or a per-site price/carbon file."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scheduler.domain import Site, SlotSignal
from scheduler.forecasts.base import (
    SIGNAL_COLUMNS,
    FetchResult,
    ProviderError,
    Series,
    as_float,
    infer_step,
    parse_utc,
    require_option,
)

CONTRACT_COLUMNS = ("time", "site", "carbon_g_per_kwh", "price_per_kwh", "renewable_kw")


class CsvProvider:
    """Any signal from a CSV file with a time column and a value column.

    Options: ``path`` (relative paths are taken from the fleet file's folder), ``column``
    (default: the ``forecasts.csv`` column of the signal, e.g. ``price_per_kwh``),
    ``time_column`` (default ``time``), ``site_column`` (default ``site``; when the file has it,
    only rows of this site are read, so ``forecasts.csv`` itself works as a source), ``scale``
    (multiplier, e.g. 0.001 for prices per MWh). Times are interval starts, ISO-8601 (naive
    means UTC); the file's resolution is its smallest time step.
    """

    name = "csv"
    signals = frozenset(SIGNAL_COLUMNS)

    def __init__(self, *, base_dir: Path | None = None) -> None:
        """Resolve relative paths against ``base_dir`` (default: the working directory)."""
        self.base_dir = base_dir

    def fetch(
        self, site: Site, signal: str, options: Mapping[str, Any], start: datetime, end: datetime
    ) -> FetchResult:
        """Read the file's values for ``site`` (the whole file; the caller resamples).

        Raises:
            ProviderError: missing path, unreadable file, missing column, bad time or number.
        """
        path = Path(str(require_option(options, "path", self.name, site.name)))
        if not path.is_absolute() and self.base_dir is not None:
            path = self.base_dir / path
        column = str(options.get("column") or SIGNAL_COLUMNS[signal])
        time_column = str(options.get("time_column", "time"))
        site_column = str(options.get("site_column", "site"))
        scale = as_float(options.get("scale", 1.0), "scale")
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ProviderError(
                f"site {site.name}: cannot read {signal} file {path}: {e.strerror}; fix 'path' "
                "under signals: in fleet.yaml"
            ) from e
        reader = csv.DictReader(text.splitlines())
        header = [h.strip() for h in reader.fieldnames or []]
        reader.fieldnames = header
        for needed in (time_column, column):
            if needed not in header:
                raise ProviderError(
                    f"{path}: no column {needed!r} (columns: {', '.join(header)}); set "
                    "'column'/'time_column' under signals: in fleet.yaml"
                )
        by_site = site_column in header
        values: dict[datetime, float] = {}
        for line, row in enumerate(reader, start=2):
            if by_site and (row.get(site_column) or "").strip() != site.name:
                continue
            cell = (row.get(column) or "").strip()
            if not cell:
                continue
            t = parse_utc(row.get(time_column), f"{path} line {line} {time_column}")
            values[t] = as_float(cell, f"{path} line {line} {column}") * scale
        if not values:
            raise ProviderError(f"{path}: no {column} values for site {site.name}")
        return FetchResult(forecast=Series(values, infer_step(values)))


def write_forecasts_csv(
    signals: Iterable[SlotSignal], path: str | Path, *, with_source: bool = False
) -> Path:
    """Write signals as ``forecasts.csv`` (planning-formats.md section 2), sorted by time, site.

    The ``wue_l_per_kwh`` column is written only when some signal carries it. With
    ``with_source``, extra columns ``source`` and ``fallback`` say where each row came from
    (readers of the contract ignore extra columns).

    Returns:
        The path written.
    """
    rows = sorted(signals, key=lambda s: (s.time, s.site))
    with_wue = any(s.wue_l_per_kwh is not None for s in rows)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        extra = ("source", "fallback") if with_source else ()
        writer.writerow(CONTRACT_COLUMNS + (("wue_l_per_kwh",) if with_wue else ()) + extra)
        for s in rows:
            row: list[Any] = [
                s.time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                s.site,
                round(s.carbon_g_per_kwh, 3),
                round(s.price_per_kwh, 5),
                round(s.renewable_kw, 4),
            ]
            if with_wue:
                row.append("" if s.wue_l_per_kwh is None else round(s.wue_l_per_kwh, 4))
            if with_source:
                row += [s.source, str(s.fallback).lower()]
            writer.writerow(row)
    return out
