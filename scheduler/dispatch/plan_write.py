"""Set-based store work of a re-plan: free requests in one query, changed rows only, compaction.

A re-plan reads the free (re-plannable) requests of every open batch part in one query and
writes a new plan version with bulk statements: assignments in one multi-row insert, new shards
in one, kept shards re-pointed and requests re-assigned by primary key in ``executemany``
batches. A part whose shards come out the same as before (same site, pool, model, slot and
sizes) keeps its shards and its requests' ``shard_id``; only parts whose placement changed are
rewritten. The write happens under ``write_lock``, which the tick's promotion of due shards
also takes, so a shard can never be queued and replaced at once.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, exists, insert, or_, select, text, update
from sqlalchemy.orm import Session

from scheduler.dispatch.planner_lock import check_fence
from scheduler.dispatch.shards import shard_sizes
from scheduler.domain import BatchStatus, ShardStatus
from scheduler.store.tables import AssignmentRecord, Batch, BatchRequest, PlanRecord, Shard

#: Key of the PostgreSQL advisory lock that serialises plan writes and due-shard promotion.
WRITE_LOCK_KEY = 0x67726964  # "grid"
_CHUNK = 500


def write_lock(s: Session) -> None:
    """Serialise this transaction with other plan writes and the tick's promotion of shards.

    PostgreSQL: a transaction-level advisory lock. SQLite: take the database write lock now
    (a write that changes nothing), so that the reads that follow see the state the writes act on.
    In a planner thread, the write is then fenced: ``PlannerFenced`` unless the planner still
    holds the planner lock (``planner_lock.check_fence``).
    """
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": WRITE_LOCK_KEY})
    else:
        s.execute(update(PlanRecord).where(PlanRecord.id < 0).values(is_current=False))
    check_fence(s)


def _replaceable(now: datetime) -> ColumnElement[bool]:
    """Shards a re-plan may replace: PLANNED and not yet due (due ones are the tick's to queue)."""
    return and_(Shard.status == ShardStatus.PLANNED.value, Shard.slot_start > now)


def _open_batch(now: datetime) -> ColumnElement[bool]:
    return and_(Batch.status == BatchStatus.IN_PROGRESS.value, Batch.deadline > now)


def _free_requests(*cols: Any) -> Any:
    """``SELECT cols`` over requests joined to their batch and shard (filter: ``_free_where``)."""
    return (
        select(*cols)
        .join(Batch, Batch.id == BatchRequest.batch_id)
        .outerjoin(Shard, Shard.id == BatchRequest.shard_id)
    )


def _free_where(now: datetime) -> ColumnElement[bool]:
    return and_(_open_batch(now), or_(BatchRequest.shard_id.is_(None), _replaceable(now)))


def load_free(s: Session, now: datetime) -> dict[str, list[int]]:
    """Free requests of every open part, in input order, in ONE query.

    Free means in no shard, or in a PLANNED shard whose slot has not started: queued, running,
    done and due planned shards are fixed (``_fixed_loads`` counts the due ones as load).
    """
    rows = s.execute(
        _free_requests(BatchRequest.part_id, BatchRequest.id)
        .where(_free_where(now))
        .order_by(BatchRequest.part_id, BatchRequest.line_no)
    ).all()
    free: dict[str, list[int]] = defaultdict(list)
    for part_id, rid in rows:
        free[part_id].append(rid)
    return dict(free)


def any_free(s: Session, now: datetime) -> bool:
    """Whether some open part has a free request (one query)."""
    q = _free_requests(BatchRequest.id).where(_free_where(now)).limit(1)
    return s.execute(q).first() is not None


@dataclass
class WriteStats:
    """Rows one re-plan wrote (the benchmark prints these)."""

    assignments: int = 0
    shards_new: int = 0
    shards_kept: int = 0
    shards_deleted: int = 0
    requests: int = 0
    stale_parts: int = 0

    @property
    def rows(self) -> int:
        """Rows inserted, updated or deleted."""
        return (
            self.assignments + self.shards_new + self.shards_kept + self.shards_deleted
        ) + self.requests

    def note(self) -> str:
        """One line for the plan's notes."""
        return (
            f"store: {self.rows} rows written ({self.assignments} assignments, "
            f"{self.shards_new} new shards, {self.shards_kept} kept shards re-pointed, "
            f"{self.shards_deleted} shards replaced, {self.requests} request rows); "
            f"{self.stale_parts} parts changed during the solve and kept their shards"
        )


@dataclass(frozen=True)
class ShardLimits:
    """Shard size bounds (settings ``max_shard_requests``, ``max_shard_gpu_minutes``)."""

    max_requests: int
    max_gpu_minutes: float


def _key(slot: datetime, site: str, pool: str, model: str) -> tuple[datetime, str, str, str]:
    return (slot, site, pool, model)


Key = tuple[datetime, str, str, str]
"""(slot start, site, pool, model): where a shard runs."""

Wanted = dict[str, list[tuple[Key, int, int, Mapping[str, Any]]]]
"""part -> the shards the plan wants: (key, size, assignment id, assignment row)."""

Existing = dict[str, list[tuple[Key, int, str]]]
"""part -> its replaceable shards in the store: (key, size, shard id)."""


@dataclass
class ShardChanges:
    """What bringing the shards in line with a plan writes (``apply_changes`` writes it)."""

    kept: list[dict[str, object]] = field(default_factory=list)
    new_shards: list[dict[str, object]] = field(default_factory=list)
    request_rows: list[dict[str, object]] = field(default_factory=list)
    drop: list[str] = field(default_factory=list)
    freed: list[str] = field(default_factory=list)


def write_assignments(
    s: Session,
    rows: Sequence[Mapping[str, Any]],
    free: Mapping[str, list[int]],
    *,
    now: datetime,
    limits: ShardLimits,
    only: set[str] | None = None,
) -> WriteStats:
    """Store one plan version's assignment ``rows`` and bring the shards in line with them.

    With ``only`` (the fast path's new parts), shards of other parts are not looked at.

    ``rows`` are ``assignments`` rows (``plan_id`` set). Must run inside the transaction that
    holds ``write_lock``. Parts whose free requests differ from ``free`` (the tick queued one of
    their shards during the solve) are left as they are, with their existing shards, and
    counted in ``stale_parts``. Four steps: insert the assignments, cut them into the shards
    the plan wants, compare with the shards the store has (``diff_shards``), write the
    difference (``apply_changes``).
    """
    stats = WriteStats()
    current = load_free(s, now)
    stale = {p for p, ids in free.items() if current.get(p, []) != ids}
    stats.stale_parts = len(stale)
    rows = sorted(
        (r for r in rows if r["part_id"] not in stale),
        key=lambda r: (r["slot_start"], r["site"], r["pool"]),
    )
    plan_id = rows[0]["plan_id"] if rows else 0
    ids = insert_assignments(s, rows)
    stats.assignments = len(ids)
    wanted = wanted_shards(ids, rows, limits)
    existing = existing_shards(s, now, skip=stale, only=only)
    changes = diff_shards(wanted, existing, free, plan_id=plan_id, now=now)
    apply_changes(s, changes)
    stats.shards_kept, stats.shards_new = len(changes.kept), len(changes.new_shards)
    stats.shards_deleted = len(changes.drop)
    stats.requests = len(changes.request_rows) + len(changes.freed)
    return stats


def insert_assignments(s: Session, rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """Insert the assignment rows in chunks; their ids, in the order of ``rows``."""
    ids: list[int] = []
    for i in range(0, len(rows), _CHUNK):
        ids += list(
            s.scalars(
                insert(AssignmentRecord).returning(
                    AssignmentRecord.id, sort_by_parameter_order=True
                ),
                rows[i : i + _CHUNK],
            )
        )
    return ids


def wanted_shards(
    ids: Sequence[int], rows: Sequence[Mapping[str, Any]], limits: ShardLimits
) -> Wanted:
    """Each assignment cut into shards within ``limits``, per part."""
    wanted: Wanted = defaultdict(list)
    for aid, row in zip(ids, rows, strict=True):
        key = _key(row["slot_start"], row["site"], row["pool"], row["model"])
        for size in shard_sizes(
            row["requests"],
            row["gpu_hours"],
            max_requests=limits.max_requests,
            max_gpu_minutes=limits.max_gpu_minutes,
        ):
            wanted[row["part_id"]].append((key, size, aid, row))
    return wanted


def existing_shards(
    s: Session, now: datetime, *, skip: set[str], only: set[str] | None
) -> Existing:
    """The store's replaceable shards of open batches, per part (``skip``ped parts left out)."""
    existing: Existing = defaultdict(list)
    for sid, part, site, pool, model, slot, n in s.execute(
        select(
            Shard.id,
            Shard.part_id,
            Shard.site,
            Shard.pool,
            Shard.model,
            Shard.slot_start,
            Shard.request_count,
        )
        .join(Batch, Batch.id == Shard.batch_id)
        .where(_open_batch(now), _replaceable(now))
    ):
        if part not in skip and (only is None or part in only):
            existing[part].append((_key(slot, site, pool, model), n, sid))
    return existing


def diff_shards(
    wanted: Wanted,
    existing: Existing,
    free: Mapping[str, list[int]],
    *,
    plan_id: int,
    now: datetime,
) -> ShardChanges:
    """Per part: the same shards (key and size) are kept and re-pointed at the new plan;
    otherwise the old ones are dropped and new ones take the part's free requests in order."""
    out = ShardChanges()
    for part in set(wanted) | set(existing):
        want, have = wanted.get(part, []), existing.get(part, [])
        if want and Counter((k, n) for k, n, _, _ in want) == Counter((k, n) for k, n, _ in have):
            by_key: dict[tuple[object, int], list[tuple[int, Mapping[str, Any]]]] = defaultdict(
                list
            )
            for k, n, aid, row in want:
                by_key[(k, n)].append((aid, row))
            for k, n, sid in have:
                aid, row = by_key[(k, n)].pop()
                out.kept.append(_shard_figures(sid, plan_id, aid, row, n))
            continue
        out.drop += [sid for _, _, sid in have]
        if not want:
            out.freed += [sid for _, _, sid in have]
            continue
        request_ids, start = free.get(part, []), 0
        for _k, size, aid, row in want:
            sid = f"shard_{uuid.uuid4().hex[:24]}"
            out.new_shards.append(_new_shard(sid, part, row, now, plan_id, aid, size))
            out.request_rows += [
                {"id": rid, "shard_id": sid} for rid in request_ids[start : start + size]
            ]
            start += size
    return out


def _new_shard(
    sid: str,
    part: str,
    row: Mapping[str, Any],
    now: datetime,
    plan_id: int,
    aid: int,
    size: int,
) -> dict[str, object]:
    return {
        "id": sid,
        "batch_id": row["batch_id"],
        "part_id": part,
        "site": row["site"],
        "pool": row["pool"],
        "model": row["model"],
        "slot_start": row["slot_start"],
        "status": ShardStatus.PLANNED.value,
        "attempts": 0,
        "created_at": now,
        "requests_done": 0,
        "requests_failed": 0,
        **_shard_figures(sid, plan_id, aid, row, size),
    }


def apply_changes(s: Session, changes: ShardChanges) -> None:
    """Write ``changes``: free requests of dropped parts, delete replaced planned shards,
    re-point kept ones, insert new ones and point their requests at them (in chunks)."""
    freed, drop = changes.freed, changes.drop
    for i in range(0, len(freed), _CHUNK):
        s.execute(
            update(BatchRequest)
            .where(BatchRequest.shard_id.in_(freed[i : i + _CHUNK]))
            .values(shard_id=None)
            .execution_options(synchronize_session=False)
        )
    for i in range(0, len(drop), _CHUNK):
        s.execute(
            delete(Shard)
            .where(Shard.id.in_(drop[i : i + _CHUNK]), Shard.status == ShardStatus.PLANNED.value)
            .execution_options(synchronize_session=False)
        )
    if changes.kept:
        s.execute(update(Shard), changes.kept)
    for i in range(0, len(changes.new_shards), _CHUNK):
        s.execute(insert(Shard), changes.new_shards[i : i + _CHUNK])
    if changes.request_rows:
        s.execute(update(BatchRequest), changes.request_rows)


def _shard_figures(
    sid: str, plan_id: int, aid: int, row: Mapping[str, object], size: int
) -> dict[str, object]:
    requests = int(row["requests"])  # type: ignore[call-overload]
    share = size / requests if requests else 0.0
    return {
        "id": sid,
        "plan_id": plan_id,
        "assignment_id": aid,
        "request_count": size,
        "planned_energy_kwh": float(row["energy_kwh"]) * share,  # type: ignore[arg-type]
        "planned_co2_g": float(row["co2_g"]) * share,  # type: ignore[arg-type]
    }


def compact_assignments(s: Session, now: datetime, retention_h: float) -> int:
    """Delete assignments of superseded plans older than ``retention_h`` that no shard uses.

    The ``plans`` rows stay (each version's totals, baselines with per-batch figures, unplaced,
    notes); a batch's planned placement stays with the newest plan that holds it and with the
    shards that ran it.

    Returns:
        The number of assignment rows deleted.
    """
    cutoff = now - timedelta(hours=retention_h)
    old = select(PlanRecord.id).where(
        PlanRecord.is_current.is_(False), PlanRecord.created_at < cutoff
    )
    used = exists().where(Shard.assignment_id == AssignmentRecord.id)
    res = s.execute(
        delete(AssignmentRecord)
        .where(AssignmentRecord.plan_id.in_(old), ~used)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(res, "rowcount", 0) or 0)
