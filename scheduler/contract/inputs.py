"""Input files of the planning contract: ``forecasts.csv``, ``batches.jsonl`` and the problem."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from scheduler.domain import Fleet, Objective, PlanningBatch, SlotSignal
from scheduler.errors import InvalidInput, LineError
from scheduler.optimizer.problem import FixedLoad, PlanningProblem

FORECAST_COLUMNS = ("time", "site", "carbon_g_per_kwh", "price_per_kwh", "renewable_kw")
_MAX_REPORTED_ERRORS = 50


def format_time(t: datetime) -> str:
    """Format a UTC time as the contract writes it, e.g. ``2026-11-22T02:00:00Z``."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: Any, what: str = "time") -> datetime:
    """Parse an ISO-8601 time with a UTC offset (``Z`` or ``+00:00``) into an aware UTC datetime.

    Raises:
        ValueError: not a string, not ISO-8601, or without a time zone (message says how to fix).
    """
    if not isinstance(text, str):
        raise ValueError(f"{what} must be an ISO-8601 string such as 2026-11-22T02:00:00Z")
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{what} {text!r} is not ISO-8601; write e.g. 2026-11-22T02:00:00Z"
        ) from None
    if t.tzinfo is None:
        raise ValueError(f"{what} {text!r} has no time zone; append 'Z' for UTC")
    return t.astimezone(UTC)


# --------------------------------------------------------------------------- forecasts.csv


def _float(text: str, column: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"{column} must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{column} must be finite, got {text!r}")
    return value


def read_forecasts(
    path: str | Path, fleet: Fleet
) -> tuple[tuple[datetime, ...], dict[tuple[str, datetime], SlotSignal]]:
    """Read ``forecasts.csv``: one row per site and slot (planning-formats.md section 2).

    The horizon is the span of the file. An optional ``wue_l_per_kwh`` column overrides the
    site's default for that slot; unknown columns are ignored.

    Returns:
        The slot starts (ascending, ``fleet.slot_minutes`` apart) and ``signals[(site, slot)]``.

    Raises:
        InvalidInput: unreadable file, missing column, bad number or time, a time not aligned
            to ``slot_minutes`` from midnight UTC, an unknown site, a duplicate row, or a gap
            (the message names the first missing site and slot). ``errors`` holds line numbers.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise InvalidInput(f"cannot read forecasts file {p}: {e.strerror}") from e
    reader = csv.DictReader(text.splitlines())
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in FORECAST_COLUMNS if c not in header]
    if missing:
        raise InvalidInput(
            f"{p}: missing column(s) {', '.join(missing)}; the header must contain "
            f"{','.join(FORECAST_COLUMNS)}[,wue_l_per_kwh]",
            [LineError(1, "missing_column", f"missing {c}", c) for c in missing],
        )
    reader.fieldnames = header
    site_names = {s.name for s in fleet.sites}
    step = timedelta(minutes=fleet.slot_minutes)
    signals: dict[tuple[str, datetime], SlotSignal] = {}
    errors: list[LineError] = []
    for line, row in enumerate(reader, start=2):
        try:
            signal = _forecast_row(row, site_names, fleet.slot_minutes)
        except ValueError as e:
            errors.append(LineError(line, "invalid_row", str(e)))
            continue
        key = (signal.site, signal.time)
        if key in signals:
            errors.append(
                LineError(line, "duplicate", f"second row for {key[0]} at {format_time(key[1])}")
            )
            continue
        signals[key] = signal
    if errors:
        raise InvalidInput(_summary(p, errors), errors[:_MAX_REPORTED_ERRORS])
    if not signals:
        raise InvalidInput(f"{p}: no rows; give one row per site and slot of the horizon")
    first, last = min(t for _, t in signals), max(t for _, t in signals)
    slots = tuple(first + i * step for i in range(int((last - first) / step) + 1))
    for t in slots:
        for site in fleet.sites:
            if (site.name, t) not in signals:
                raise InvalidInput(
                    f"{p}: gap: no row for site {site.name} at slot {format_time(t)}; every site "
                    f"needs a row for every slot from {format_time(first)} to {format_time(last)}"
                )
    return slots, signals


def _forecast_row(row: Mapping[str, Any], site_names: set[str], slot_minutes: int) -> SlotSignal:
    if None in row:  # more cells than header columns
        raise ValueError("more cells than header columns")
    t = parse_time(row.get("time"), "time")
    minutes = t.hour * 60 + t.minute
    if t.second or t.microsecond or minutes % slot_minutes:
        raise ValueError(
            f"time {format_time(t)} is not a slot start: slots are {slot_minutes} min apart "
            "from midnight UTC"
        )
    site = (row.get("site") or "").strip()
    if site not in site_names:
        raise ValueError(f"unknown site {site!r}; the fleet has {', '.join(sorted(site_names))}")
    renewable = _float(row.get("renewable_kw") or "", "renewable_kw")
    carbon = _float(row.get("carbon_g_per_kwh") or "", "carbon_g_per_kwh")
    if renewable < 0 or carbon < 0:
        raise ValueError("renewable_kw and carbon_g_per_kwh must be >= 0")
    wue_text = (row.get("wue_l_per_kwh") or "").strip()
    wue = _float(wue_text, "wue_l_per_kwh") if wue_text else None
    if wue is not None and wue < 0:
        raise ValueError("wue_l_per_kwh must be >= 0")
    return SlotSignal(
        time=t,
        site=site,
        carbon_g_per_kwh=carbon,
        price_per_kwh=_float(row.get("price_per_kwh") or "", "price_per_kwh"),
        renewable_kw=renewable,
        wue_l_per_kwh=wue,
    )


def _summary(path: Path, errors: Sequence[LineError]) -> str:
    head = "; ".join(f"line {e.line}: {e.message}" for e in errors[:3])
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return f"{path}: {len(errors)} invalid line(s): {head}{more}"


# --------------------------------------------------------------------------- batches.jsonl


def read_batches(path: str | Path) -> list[PlanningBatch]:
    """Read ``batches.jsonl``: one planning job per line (planning-formats.md section 3).

    Blank lines are skipped; unknown fields are ignored.

    Raises:
        InvalidInput: unreadable file, a line that is not a JSON object, both or neither of
            ``model``/``min_quality``, a missing or mistyped field, a deadline not after
            ``submitted_at``, or a repeated id; ``errors`` lists every bad line by number.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise InvalidInput(f"cannot read batches file {p}: {e.strerror}") from e
    return parse_batches(text.splitlines(), where=str(p))


def parse_batches(lines: Iterable[str], *, where: str = "batches") -> list[PlanningBatch]:
    """Parse JSONL lines into planning batches (see ``read_batches``).

    Raises:
        InvalidInput: as ``read_batches``.
    """
    batches: list[PlanningBatch] = []
    errors: list[LineError] = []
    seen: set[str] = set()
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            errors.append(LineError(number, "invalid_json", f"not JSON: {e.msg}"))
            continue
        try:
            batch = _batch(raw)
        except ValueError as e:
            errors.append(LineError(number, "invalid_batch", str(e)))
            continue
        if batch.id in seen:
            errors.append(LineError(number, "duplicate_id", f"id {batch.id!r} appears twice"))
            continue
        seen.add(batch.id)
        batches.append(batch)
    if errors:
        raise InvalidInput(_summary(Path(where), errors), errors[:_MAX_REPORTED_ERRORS])
    return batches


def _number(raw: Mapping[str, Any], key: str, *, whole: bool = False) -> float:
    value = raw.get(key)
    if value is None:
        raise ValueError(f"missing required field {key!r}")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{key} must be a number, got {value!r}")
    if value < 0 or (whole and value != int(value)):
        kind = "a whole number >= 0" if whole else "a number >= 0"
        raise ValueError(f"{key} must be {kind}, got {value!r}")
    return float(value)


def _batch(raw: Any) -> PlanningBatch:
    if not isinstance(raw, dict):
        raise ValueError("each line must be a JSON object")
    batch_id = raw.get("id")
    if not isinstance(batch_id, str) or not batch_id:
        raise ValueError("missing required field 'id' (a non-empty string)")
    has_model, has_quality = raw.get("model") is not None, raw.get("min_quality") is not None
    if has_model == has_quality:
        which = "both" if has_model else "neither"
        raise ValueError(
            f"batch {batch_id}: give exactly one of 'model' or 'min_quality', not {which}"
        )
    model = raw.get("model")
    if has_model and (not isinstance(model, str) or not model):
        raise ValueError(f"batch {batch_id}: model must be a non-empty string")
    requests = int(_number(raw, "requests", whole=True))
    if requests < 1:
        raise ValueError(f"batch {batch_id}: requests must be >= 1")
    submitted = parse_time(raw.get("submitted_at"), "submitted_at")
    deadline = parse_time(raw.get("deadline"), "deadline")
    if deadline <= submitted:
        raise ValueError(f"batch {batch_id}: deadline must be after submitted_at")
    sites = raw.get("sites")
    if sites is not None and (
        not isinstance(sites, list) or not sites or not all(isinstance(s, str) for s in sites)
    ):
        raise ValueError(f"batch {batch_id}: sites must be a non-empty list of site names")
    priority = _number(raw, "priority") if raw.get("priority") is not None else 1.0
    tenant = raw.get("tenant")
    need = raw.get("max_request_tokens")
    if need is not None and (type(need) is not int or need < 1):
        raise ValueError(
            f"batch {batch_id}: max_request_tokens must be a whole number of tokens >= 1 "
            "(the context its largest request needs), or absent"
        )
    return PlanningBatch(
        id=batch_id,
        requests=requests,
        input_tokens=_number(raw, "input_tokens"),
        output_tokens=_number(raw, "output_tokens"),
        submitted_at=submitted,
        deadline=deadline,
        model=model if has_model else None,
        min_quality=_number(raw, "min_quality") if has_quality else None,
        sites=tuple(sites) if sites is not None else None,
        priority=priority,
        tenant=tenant if isinstance(tenant, str) else None,
        tokens_estimated=bool(raw.get("tokens_estimated", False)),
        max_request_tokens=need,
    )


# --------------------------------------------------------------------------- problem


def build_problem(
    fleet: Fleet,
    slots: Sequence[datetime],
    signals: Mapping[tuple[str, datetime], SlotSignal],
    batches: Sequence[PlanningBatch],
    objectives: Sequence[Objective] | None = None,
    tolerances: Sequence[float] | None = None,
    *,
    time_limit_s: float = 60.0,
    carbon_cap_g: float | None = None,
    carbon_cap_by_day_g: Mapping[date, float] | None = None,
    carbon_price_per_g: float = 0.0,
    fixed: Sequence[FixedLoad] = (),
) -> PlanningProblem:
    """Assemble a ``PlanningProblem``, checking batches against the fleet.

    Objectives and tolerances default to the fleet's ``defaults``; tolerances may be shorter
    than objectives (missing ones are 0).

    Raises:
        InvalidInput: unknown model or site named by a batch, a ``min_quality`` no model
            reaches, bad tolerances, or no slots.
    """
    objs = tuple(objectives) if objectives is not None else fleet.default_objectives
    tols = list(tolerances) if tolerances is not None else list(fleet.default_tolerances)
    if len(tols) > len(objs):
        raise InvalidInput(
            f"{len(tols)} tolerances for {len(objs)} objectives; give at most one each"
        )
    if any(t < 0 or not math.isfinite(t) for t in tols):
        raise InvalidInput(f"tolerances must be finite and >= 0, got {tols}")
    tols += [0.0] * (len(objs) - len(tols))
    if not slots:
        raise InvalidInput("the forecasts cover no slot; give at least one slot per site")
    models = {m.name: m for m in fleet.models}
    sites = {s.name for s in fleet.sites}
    best = max(m.quality for m in fleet.models)
    errors: list[LineError] = []
    for b in batches:
        if b.model is not None and b.model not in models:
            errors.append(
                LineError(
                    None,
                    "unknown_model",
                    f"batch {b.id}: unknown model {b.model!r}; the fleet has {', '.join(models)}",
                    "model",
                )
            )
        if b.min_quality is not None and b.min_quality > best:
            errors.append(
                LineError(
                    None,
                    "unreachable_quality",
                    f"batch {b.id}: min_quality "
                    f"{b.min_quality} is above the best model's quality {best}",
                    "min_quality",
                )
            )
        for s in b.sites or ():
            if s not in sites:
                errors.append(
                    LineError(
                        None,
                        "unknown_site",
                        f"batch {b.id}: unknown site {s!r}; "
                        f"the fleet has {', '.join(sorted(sites))}",
                        "sites",
                    )
                )
    if errors:
        raise InvalidInput("; ".join(e.message for e in errors[:3]), errors)
    return PlanningProblem(
        fleet=fleet,
        slots=tuple(slots),
        signals=dict(signals),
        batches=tuple(batches),
        objectives=objs,
        tolerances=tuple(float(t) for t in tols),
        carbon_cap_g=carbon_cap_g,
        carbon_cap_by_day_g=dict(carbon_cap_by_day_g or {}),
        carbon_price_per_g=carbon_price_per_g,
        fixed=tuple(fixed),
        time_limit_s=time_limit_s,
    )
