"""Saved answers of the UK Carbon Intensity API (NESO) as forecast vintages and actuals.

An archive directory holds one file per issue, named by its issue time (``2023-03-14T0331Z.csv``
or ``.json``): either the API's JSON answer or its flattened CSV (``from,intensity.forecast,
intensity.actual``). ``fw48h`` answers are 48 h forecasts; ``pt24h`` answers are the past 24 h
with actuals. Half-hours are averaged into the fleet's slots (planning-formats.md section 2);
an issue becomes usable at the first slot start at or after its issue time.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path

from scheduler.contract.vintages import ceil_to_slot
from scheduler.domain import SlotSignal
from scheduler.forecasts.base import ProviderError, as_float, parse_utc
from scheduler.forecasts.uk import STEP, parse_periods


def read_answer(path: Path) -> tuple[dict[datetime, float], dict[datetime, float]]:
    """Forecasts and actuals (half-hour start -> gCO2/kWh) of one saved answer.

    Raises:
        ProviderError: unreadable file or neither shape.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise ProviderError(f"cannot read {path}: {e.strerror}") from e
    if path.suffix == ".json":
        return parse_periods(json.loads(text))
    forecast: dict[datetime, float] = {}
    actual: dict[datetime, float] = {}
    for i, row in enumerate(csv.DictReader(text.splitlines()), start=2):
        t = parse_utc(row.get("from"), f"{path.name} line {i} 'from'")
        if (row.get("intensity.forecast") or "").strip():
            forecast[t] = as_float(row["intensity.forecast"], f"{path.name} line {i} forecast")
        if (row.get("intensity.actual") or "").strip():
            actual[t] = as_float(row["intensity.actual"], f"{path.name} line {i} actual")
    return forecast, actual


def issue_time(path: Path) -> datetime:
    """The issue time in a file name such as ``2023-03-14T0331Z.csv``."""
    stem = path.stem
    return parse_utc(f"{stem[:13]}:{stem[13:15]}:00Z", f"issue time of {path.name}")


def to_slots(values: Mapping[datetime, float], slot_minutes: int) -> dict[datetime, float]:
    """Mean of the half-hours of each slot; only slots whose every half-hour is present."""
    step = timedelta(minutes=slot_minutes)
    per = max(1, step // STEP)
    groups: dict[datetime, list[float]] = defaultdict(list)
    for t, v in values.items():
        midnight = t.replace(hour=0, minute=0, second=0, microsecond=0)
        groups[midnight + ((t - midnight) // step) * step].append(v)
    return {t: sum(vs) / len(vs) for t, vs in groups.items() if len(vs) == per}


def vintages(directory: Path, site: str, slot_minutes: int) -> list[tuple[datetime, SlotSignal]]:
    """Every issue's forecasts as ``(issued_at, signal)`` rows for ``site`` (price 0, no solar).

    ``issued_at`` is the file's issue time rounded up to a slot start; slots before it are left
    out (a decision at ``issued_at`` may use the rest).
    """
    rows: list[tuple[datetime, SlotSignal]] = []
    for path in sorted(directory.glob("*.csv")) + sorted(directory.glob("*.json")):
        issued = ceil_to_slot(issue_time(path), slot_minutes)
        forecast, _ = read_answer(path)
        for t, v in sorted(to_slots(forecast, slot_minutes).items()):
            if t >= issued:
                rows.append((issued, SlotSignal(t, site, v, 0.0, 0.0, source="uk-archive")))
    return rows


def actuals(directory: Path, site: str, slot_minutes: int) -> list[SlotSignal]:
    """The measured intensities of every saved answer, one signal per complete slot."""
    measured: dict[datetime, float] = {}
    for path in sorted(directory.glob("*.csv")) + sorted(directory.glob("*.json")):
        measured.update(read_answer(path)[1])
    return [
        SlotSignal(t, site, v, 0.0, 0.0, source="uk-archive")
        for t, v in sorted(to_slots(measured, slot_minutes).items())
    ]
