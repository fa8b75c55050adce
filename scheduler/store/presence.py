"""Worker presence: every worker process says it is alive, idle or busy, shard or not.

A worker's row (``worker_presence``, one per Celery node name ``site.pool.pid@host``) is written
by a thread of the worker every ``GRIDSHIFT_HEARTBEAT_S``: its pool, state (``idle``,
``running``, ``stopped`` when it shuts down cleanly), the shard it runs and a free-text detail.
The workers view lists every worker that wrote one, so a worker that has not run a shard yet
is listed, and counts a worker live while its last beat is fresh. Leases stay the truth about
who may run a shard; this table only says who is there.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from scheduler.store.tables import Base, UTCDateTime


class WorkerPresence(Base):
    """The last word of one worker process."""

    __tablename__ = "worker_presence"
    worker: Mapped[str] = mapped_column(String(200), primary_key=True)
    site: Mapped[str] = mapped_column(String(100), index=True)
    pool: Mapped[str] = mapped_column(String(100))
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    state: Mapped[str] = mapped_column(String(20))
    shard_id: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(String(500))


def beat(
    session: Session,
    *,
    worker: str,
    site: str,
    pool: str,
    host: str,
    pid: int,
    state: str,
    now: datetime,
    shard_id: str | None = None,
    detail: str | None = None,
) -> None:
    """Write ``worker``'s row (created on its first beat); the caller commits."""
    row = session.get(WorkerPresence, worker)
    if row is None:
        row = WorkerPresence(
            worker=worker, site=site, pool=pool, host=host, pid=pid, started_at=now
        )
        session.add(row)
    row.site, row.pool, row.host, row.pid = site, pool, host, pid
    row.last_seen_at, row.state, row.shard_id = now, state, shard_id
    row.detail = detail[:500] if detail else None


def presence_rows(session: Session) -> list[WorkerPresence]:
    """Every worker that ever beat, most recently seen first."""
    return list(
        session.scalars(select(WorkerPresence).order_by(WorkerPresence.last_seen_at.desc()))
    )
