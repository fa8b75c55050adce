"""Creating a batch: check the create options, validate the input file, store requests and parts."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from scheduler.domain import BatchStatus, Fleet
from scheduler.engine_options import OptionCheck, engine_kinds_by_model
from scheduler.errors import ConfigError, InvalidInput, LineError
from scheduler.intake.bounds import MAX_CHARS_PER_TOKEN
from scheduler.intake.catalog import EMBEDDINGS, ModelCatalog
from scheduler.intake.expiry import ExpiresAfter
from scheduler.intake.validate import (
    DEFAULT_MAX_TOKENS,
    ENDPOINTS,
    ScanResult,
    scan_file,
)
from scheduler.slots import slot_floor
from scheduler.store.batch_moves import batch_from
from scheduler.store.batches import (
    insert_parts,
    insert_requests,
    new_batch,
    now_s,
)
from scheduler.store.files import content_path, get_file
from scheduler.store.paging import storable
from scheduler.store.tables import Batch
from scheduler.store.webhooks import record_batch_event

_WINDOW = re.compile(r"^\s*(\d+)\s*([hd])\s*$", re.ASCII)
MAX_WINDOW_DAYS = 3650
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512
MODERATIONS = "/v1/moderations"


@dataclass(frozen=True, slots=True)
class BatchOptions:
    """What a client asked for in ``POST /v1/batches`` (OpenAI fields plus gridshift's extras)."""

    input_file_id: str
    endpoint: str
    completion_window: str = "24h"
    deadline: datetime | int | float | str | None = None
    min_quality: float | None = None
    sites: tuple[str, ...] | None = None
    priority: float = 1.0
    metadata: Mapping[str, str] | None = None
    output_expires_after: ExpiresAfter | None = None


def _bad(message: str, param: str, code: str = "invalid_value") -> InvalidInput:
    return InvalidInput(message, [LineError(line=None, code=code, message=message, param=param)])


def parse_window(window: str) -> timedelta:
    """Parse a completion window such as ``24h``, ``6h``, ``72h`` or ``2d``.

    Raises:
        InvalidInput: anything else, or a zero window.
    """
    m = _WINDOW.match(window or "")
    if not m or int(m.group(1)) == 0:
        raise _bad(
            f"completion_window must be a whole number of hours or days such as '24h' or '3d', "
            f"got {window[:80]!r}",
            "completion_window",
        )
    n = int(m.group(1))
    if n > (MAX_WINDOW_DAYS * 24 if m.group(2) == "h" else MAX_WINDOW_DAYS):
        raise _bad(
            f"completion_window {window.strip()!r} is longer than {MAX_WINDOW_DAYS} days",
            "completion_window",
        )
    return timedelta(hours=n) if m.group(2) == "h" else timedelta(days=n)


def _from_unix(seconds: int | float) -> datetime:
    try:
        return datetime.fromtimestamp(float(seconds), UTC)
    except (OverflowError, ValueError, OSError):
        raise _bad(
            f"deadline {seconds!r} is not a Unix time in seconds within the calendar", "deadline"
        ) from None


def check_deadline_reachable(created_at: int, deadline: datetime, slot_minutes: int) -> None:
    """Refuse a deadline that falls inside the slot in progress.

    Work is planned in whole slots and may use the slot in progress only if that slot ends by
    the deadline (the planning contract's window rule), so such a batch could never run.

    Raises:
        InvalidInput: the deadline is before the end of the current slot.
    """
    created = datetime.fromtimestamp(created_at, UTC)
    slot_end = slot_floor(created, slot_minutes) + timedelta(minutes=slot_minutes)
    if deadline < slot_end:
        raise _bad(
            f"deadline {deadline.isoformat()} falls inside the current {slot_minutes}-minute "
            f"slot, which ends at {slot_end.isoformat()}: work is planned in whole slots, so "
            f"the earliest deadline this batch can meet is {slot_end.isoformat()}; set a later "
            "deadline or a longer completion_window",
            "deadline",
        )


def resolve_deadline(
    created_at: int, window: str, deadline: datetime | int | float | str | None
) -> datetime:
    """The batch's deadline: ``deadline`` if given (Unix seconds or ISO 8601), else created + window.

    Raises:
        InvalidInput: unreadable deadline, or one not after ``created_at``.
    """
    span = parse_window(window)
    if deadline is None:
        return datetime.fromtimestamp(created_at, UTC) + span
    if isinstance(deadline, bool):
        raise _bad("deadline must be Unix seconds or an ISO 8601 time", "deadline")
    if isinstance(deadline, int | float):
        when = _from_unix(deadline)
    elif isinstance(deadline, str) and deadline.strip().isascii() and deadline.strip().isdigit():
        when = _from_unix(int(deadline))
    elif isinstance(deadline, str):
        try:
            when = datetime.fromisoformat(deadline.replace("Z", "+00:00"))
        except ValueError:
            raise _bad(
                "deadline must be Unix seconds or ISO 8601 like '2026-01-31T06:00:00Z', "
                f"got {deadline[:80]!r}",
                "deadline",
            ) from None
    else:
        when = deadline
    if when.tzinfo is None:
        raise _bad("deadline needs a time zone (e.g. a trailing 'Z' for UTC)", "deadline")
    try:
        when = when.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+14:00 is before year 1 in UTC
        raise _bad(f"deadline {deadline!r} is outside the calendar in UTC", "deadline") from None
    if when.timestamp() <= created_at:
        raise _bad(f"deadline {when.isoformat()} is not in the future", "deadline")
    return when


def check_options(options: BatchOptions, fleet: Fleet | None) -> Fleet:
    """Check the create options that do not depend on the file.

    Raises:
        InvalidInput: unsupported endpoint, unknown site, unreachable min_quality, bad metadata.
        ConfigError: no fleet is configured.
    """
    if options.endpoint == MODERATIONS:
        raise _bad(
            "/v1/moderations needs a classification model and no fleet model classifies; "
            f"use one of {list(ENDPOINTS)}",
            "endpoint",
        )
    if options.endpoint not in ENDPOINTS:
        raise _bad(
            f"endpoint must be one of {list(ENDPOINTS)}, got {options.endpoint[:80]!r}", "endpoint"
        )
    parse_window(options.completion_window)
    if fleet is None:
        raise ConfigError(
            "no fleet is configured: set GRIDSHIFT_FLEET to a fleet.yaml (see planning-formats.md)"
        )
    if options.sites is not None:
        names = {s.name for s in fleet.sites}
        unknown = sorted(set(options.sites) - names)
        if unknown or not options.sites:
            raise _bad(
                f"sites must name fleet sites {sorted(names)}; unknown: {unknown[:5]}", "sites"
            )
    if options.min_quality is not None and not math.isfinite(options.min_quality):
        raise _bad(f"min_quality must be a finite number, got {options.min_quality}", "min_quality")
    if options.min_quality is not None and not any(
        m.quality >= options.min_quality for m in fleet.models if not m.embeds
    ):
        best = max((m.quality for m in fleet.models if not m.embeds), default=None)
        raise _bad(
            f"min_quality {options.min_quality} is above every fleet model (best {best})",
            "min_quality",
        )
    if not (options.priority > 0 and math.isfinite(options.priority)):
        raise _bad(f"priority must be a finite number > 0, got {options.priority}", "priority")
    meta = options.metadata or {}
    if len(meta) > MAX_METADATA_PAIRS or any(
        not isinstance(v, str)
        or not (storable(k) and storable(v))
        or len(k) > MAX_METADATA_KEY_CHARS
        or len(v) > MAX_METADATA_VALUE_CHARS
        for k, v in meta.items()
    ):
        raise _bad(
            f"metadata takes at most {MAX_METADATA_PAIRS} string pairs, keys up to "
            f"{MAX_METADATA_KEY_CHARS} and values up to {MAX_METADATA_VALUE_CHARS} characters "
            "(text without NUL characters or lone surrogates)",
            "metadata",
        )
    return fleet


def create_batch(
    session: Session,
    fleet: Fleet | None,
    tenant_id: str,
    options: BatchOptions,
    *,
    max_requests: int,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
    now: int | None = None,
    sync_max_bytes: int | None = None,
) -> Batch:
    """Create a batch (flushed, the caller commits); validate its file now if it is small.

    A file of at most ``sync_max_bytes`` bytes (None: any size) is validated before this
    returns: a good file leaves the batch ``in_progress`` with its ``batch_requests`` and one
    ``batch_parts`` row per model, a bad one ``failed`` with every bad line in ``errors``. A
    larger file leaves the batch ``validating``; ``validate_pending`` finishes it (the API
    starts it in the background after answering, and every dispatcher tick retries it). Nothing
    is written if this raises.

    Raises:
        InvalidInput: create options are wrong, or the input file is not a ``batch`` file.
        NotFound: the input file does not exist for this tenant.
        ConfigError: no fleet is configured.
    """
    fleet = check_options(options, fleet)
    created_at = now_s() if now is None else now
    deadline = resolve_deadline(created_at, options.completion_window, options.deadline)
    check_deadline_reachable(created_at, deadline, fleet.slot_minutes)
    file = get_file(session, tenant_id, options.input_file_id)
    if file.purpose != "batch":
        raise _bad(
            f"file {file.id} has purpose {file.purpose!r}; upload the input with purpose 'batch'",
            "input_file_id",
        )
    batch = new_batch(
        session,
        tenant_id=tenant_id,
        endpoint=options.endpoint,
        input_file_id=file.id,
        completion_window=options.completion_window,
        deadline=deadline,
        created_at=created_at,
        min_quality=options.min_quality,
        sites=list(options.sites) if options.sites is not None else None,
        priority=options.priority,
        metadata=options.metadata,
    )
    if options.output_expires_after is not None:
        batch.output_expires_after_s = options.output_expires_after.seconds
        session.flush()
    if sync_max_bytes is not None and file.bytes > sync_max_bytes:
        return batch
    scan = scan_batch_file(fleet, content_path(file), batch, max_requests=max_requests)
    store_scan(session, batch.id, scan, fleet, default_max_tokens=default_max_tokens, at=created_at)
    session.refresh(batch)
    return batch


def scan_batch_file(fleet: Fleet, path: Path, batch: Batch, *, max_requests: int) -> ScanResult:
    """Validate the input file of ``batch`` against the fleet's models and aliases."""
    return scan_file(
        path,
        endpoint=batch.endpoint,
        models=ModelCatalog.of(fleet),
        min_quality=batch.min_quality,
        max_requests=max_requests,
        options=OptionCheck(engine_kinds_by_model(fleet)),
    )


def store_scan(
    session: Session,
    batch_id: str,
    scan: ScanResult,
    fleet: Fleet,
    *,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
    at: int | None = None,
) -> bool:
    """Record a scan's outcome on a ``validating`` batch, in the caller's transaction.

    The first statement is a compare-and-set ``validating -> in_progress|failed``: a batch
    already moved (validated by a concurrent caller, or cancelled) is left alone and nothing
    is inserted. Returns whether this call moved it.
    """
    stamp = now_s() if at is None else at
    if not scan.ok:
        values: dict[str, Any] = {
            "status": BatchStatus.FAILED.value,
            "failed_at": stamp,
            "errors": {
                "object": "list",
                "data": [
                    {"code": e.code, "message": e.message, "param": e.param, "line": e.line}
                    for e in scan.listed_errors()
                ],
            },
        }
    else:
        values = {
            "status": BatchStatus.IN_PROGRESS.value,
            "in_progress_at": stamp,
            "request_total": scan.requests,
            "model": scan.requested[0] if len(scan.requested) == 1 else None,
        }
    moved = session.execute(
        update(Batch)
        .where(
            Batch.id == batch_id,
            batch_from(BatchStatus(values["status"]), BatchStatus.VALIDATING),
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        return False
    if not scan.ok:  # batch.failed commits with the status
        record_batch_event(session, batch_id, BatchStatus.FAILED.value)
    if scan.ok:
        batch = session.get(Batch, batch_id)
        assert batch is not None
        insert_parts(session, part_rows(batch, scan, fleet, default_max_tokens))
        insert_requests(session, request_rows(batch_id, scan))
    session.flush()
    return True


def part_id(batch_id: str, model: str) -> str:
    """Id of the planning part of ``batch_id`` whose lines name ``model``."""
    return f"{batch_id}~{model}"


def part_rows(
    batch: Batch, scan: ScanResult, fleet: Fleet, default_max_tokens: int
) -> list[dict[str, Any]]:
    """One ``batch_parts`` row per model named in the file, with estimated token totals.

    Input tokens are prompt characters / 4; output tokens are max_tokens (or
    ``default_max_tokens``) times the request's ``n`` (each of its ``n`` completions may run to
    max_tokens) times the model's ``expected_output_fraction`` (for ``auto``: the
    largest fraction among generation models meeting the floor, a conservative estimate;
    embeddings: none). ``max_request_tokens`` is the context the part's largest line needs at
    least (prompt lower bound + max_tokens, as intake checks it), which the planner holds.
    """
    n = len(scan.models)
    requests = [0] * n
    input_tokens = [0] * n
    budget = [0] * n
    need = [0] * n
    columns = zip(scan.model_index, scan.input_tokens, scan.max_tokens, scan.choices, strict=True)
    for idx, tok, mt, n in columns:
        requests[idx] += 1
        input_tokens[idx] += tok
        budget[idx] += (mt or default_max_tokens) * n
        # input_tokens is characters // 4, so characters // MAX_CHARS_PER_TOKEN is at least this
        least = tok * 4 // MAX_CHARS_PER_TOKEN + (mt or 1)
        if least > need[idx]:
            need[idx] = least
    rows = []
    for idx, model in enumerate(scan.models):
        floor = scan.floors.get(model)  # set exactly for the auto parts
        if floor is not None:
            fraction = max(
                m.expected_output_fraction
                for m in fleet.models
                if m.quality >= floor and not m.embeds
            )
        elif batch.endpoint == EMBEDDINGS:
            fraction = 0.0  # embeddings produce no output tokens
        else:
            fraction = fleet.model(model).expected_output_fraction
        rows.append(
            {
                "id": part_id(batch.id, model),
                "batch_id": batch.id,
                "model": None if floor is not None else model,
                "min_quality": floor,
                "requests": requests[idx],
                "input_tokens": float(input_tokens[idx]),
                "output_tokens": budget[idx] * fraction,
                "tokens_estimated": True,
                # embeddings: the sum of a line's inputs overstates it (each input is embedded
                # alone, and intake held the longest to the named model's context)
                "max_request_tokens": None if batch.endpoint == EMBEDDINGS else need[idx],
            }
        )
    return rows


def request_rows(batch_id: str, scan: ScanResult) -> Iterator[dict[str, Any]]:
    """``batch_requests`` rows of a scanned file (generated lazily, in line order)."""
    part_ids = [part_id(batch_id, m) for m in scan.models]
    columns = zip(
        scan.custom_ids,
        scan.line_no,
        scan.byte_offset,
        scan.byte_len,
        scan.input_tokens,
        scan.max_tokens,
        scan.model_index,
        strict=True,
    )
    for cid, line_no, offset, length, tokens, mt, idx in columns:
        yield {
            "batch_id": batch_id,
            "part_id": part_ids[idx],
            "line_no": line_no,
            "custom_id": cid,
            "byte_offset": offset,
            "byte_len": length,
            "input_tokens_est": tokens,
            "max_tokens": mt or None,
            "shard_id": None,
        }
