"""The workers view: pools, live workers with their heartbeats and leases, retries (what Flower shows).

Workers are known from their own presence beats (``worker_presence``: every worker process,
idle or busy, every heartbeat), their execution attempts (``executions.worker``) and the shards
they lease: a running shard carries its worker's name (``lease_owner``), its last heartbeat and
its lease expiry. A worker counts as live while it holds an unexpired lease or its last presence
beat is fresh; a retry is a shard that needed more than one attempt or recorded an error.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime

from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from scheduler.dispatch.poison import STORAGE_FAULT
from scheduler.domain import Fleet
from scheduler.store.presence import presence_rows
from scheduler.store.tables import Execution, Shard

RECENT_SHARDS = 200
RECENT_EXECUTIONS = 500


class PoolRow(BaseModel):
    """One site pool: capacity and its shards by status."""

    site: str
    pool: str
    gpu: str
    count: int
    queue: str
    shards: dict[str, int]
    live_workers: int


class WorkerRow(BaseModel):
    """One worker as its executions and leases show it."""

    worker: str
    site: str
    pool: str
    live: bool
    last_seen_at: datetime | None
    shard_id: str | None = None
    batch_id: str | None = None
    heartbeat_at: datetime | None = None
    heartbeat_age_s: float | None = None
    lease_expires_at: datetime | None = None
    lease_left_s: float | None = None
    attempts_done: int = 0
    attempts_failed: int = 0
    attempts_storage_fault: int = 0  # given back for a full/failing data dir (not counted)
    last_storage_error: str | None = None
    # From the worker's own presence beat (``worker_presence``): idle, running or stopped.
    state: str | None = None
    presence_at: datetime | None = None
    presence_age_s: float | None = None
    detail: str | None = None


class RetryRow(BaseModel):
    """A shard that needed more than one attempt, or recorded an error."""

    shard_id: str
    batch_id: str
    site: str
    pool: str
    status: str
    attempts: int
    last_error: str | None


class WorkersView(BaseModel):
    """The answer of ``GET /v1/workers``."""

    now: datetime
    pools: list[PoolRow]
    workers: list[WorkerRow]
    retries: list[RetryRow]


def _aware(t: datetime | None) -> datetime | None:
    return None if t is None else (t if t.tzinfo else t.replace(tzinfo=UTC))


def workers_view(
    session: Session, fleet: Fleet, now: datetime, *, stale_after_s: float = 90.0
) -> WorkersView:
    """Pools with shard counts, workers from their presence beats and latest leases, and
    retried shards. A worker is live while it holds an unexpired lease, or while its last
    presence beat is under ``stale_after_s`` old and did not say ``stopped``."""
    counts: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for site, pool, status, n in session.execute(
        select(Shard.site, Shard.pool, Shard.status, func.count()).group_by(
            Shard.site, Shard.pool, Shard.status
        )
    ).all():
        counts[(site, pool)][status] = int(n)
    workers = _workers(session, now)
    _merge_presence(session, workers, now, stale_after_s)
    live_per_pool = Counter((w.site, w.pool) for w in workers.values() if w.live)
    pools = [
        PoolRow(
            site=site.name,
            pool=p.name,
            gpu=p.gpu,
            count=p.count,
            queue=f"{site.name}.{p.name}",
            shards=dict(sorted(counts[(site.name, p.name)].items())),
            live_workers=live_per_pool[(site.name, p.name)],
        )
        for site in fleet.sites
        for p in site.pools
    ]
    retries = [
        RetryRow(
            shard_id=s.id,
            batch_id=s.batch_id,
            site=s.site,
            pool=s.pool,
            status=s.status,
            attempts=s.attempts,
            last_error=s.last_error,
        )
        for s in session.scalars(
            select(Shard)
            .where((Shard.attempts > 1) | Shard.last_error.is_not(None))
            .order_by(Shard.attempts.desc(), Shard.id)
            .limit(RECENT_SHARDS)
        ).all()
    ]
    ordered = sorted(workers.values(), key=lambda w: (not w.live, w.site, w.pool, w.worker))
    return WorkersView(now=now, pools=pools, workers=ordered, retries=retries)


def _workers(session: Session, now: datetime) -> dict[str, WorkerRow]:
    """Workers from their recent execution attempts, with the lease of the shard each runs."""
    workers: dict[str, WorkerRow] = {}
    recent = session.execute(
        select(Execution, Shard.site, Shard.pool)
        .join(Shard, Shard.id == Execution.shard_id)
        .order_by(Execution.started_at.desc(), Execution.id.desc())
        .limit(RECENT_EXECUTIONS)
    ).all()
    for ex, site, pool in recent:
        w = workers.get(ex.worker)
        if w is None:
            seen = _aware(ex.finished_at or ex.started_at)
            w = workers[ex.worker] = WorkerRow(
                worker=ex.worker, site=site, pool=pool, live=False, last_seen_at=seen
            )
        if ex.status == "done":
            w.attempts_done += 1
        elif ex.status == STORAGE_FAULT:
            w.attempts_storage_fault += 1
            w.last_storage_error = w.last_storage_error or ex.error
        elif ex.status not in ("running", "claimed"):
            w.attempts_failed += 1
    for shard in session.scalars(
        select(Shard).where(Shard.status == "running", Shard.lease_owner.is_not(None))
    ).all():
        owner = str(shard.lease_owner)
        expires, beat = _aware(shard.lease_expires_at), _aware(shard.heartbeat_at)
        w = workers.setdefault(
            owner,
            WorkerRow(
                worker=owner, site=shard.site, pool=shard.pool, live=False, last_seen_at=beat
            ),
        )
        w.live = expires is not None and expires > now
        w.shard_id, w.batch_id = shard.id, shard.batch_id
        w.heartbeat_at, w.lease_expires_at = beat, expires
        w.heartbeat_age_s = None if beat is None else (now - beat).total_seconds()
        w.lease_left_s = None if expires is None else (expires - now).total_seconds()
    return workers


def _merge_presence(
    session: Session, workers: dict[str, WorkerRow], now: datetime, stale_after_s: float
) -> None:
    """Add every worker that sent a presence beat (a worker with no shard yet included)."""
    for row in presence_rows(session):
        seen = _aware(row.last_seen_at)
        w = workers.setdefault(
            row.worker,
            WorkerRow(
                worker=row.worker, site=row.site, pool=row.pool, live=False, last_seen_at=seen
            ),
        )
        age = None if seen is None else (now - seen).total_seconds()
        w.state, w.presence_at, w.presence_age_s, w.detail = row.state, seen, age, row.detail
        fresh = age is not None and age <= stale_after_s and row.state != "stopped"
        w.live = w.live or fresh
        if w.last_seen_at is None or (seen is not None and seen > w.last_seen_at):
            w.last_seen_at = seen
