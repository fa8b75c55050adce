"""One planner per database, checked with the server: the planner lock and its fence.

``PlannerLock`` takes a PostgreSQL session advisory lock (on SQLite an exclusive lock on a file
beside the database). Holding a connection object is not holding the lock: when the lock's
backend is terminated, PostgreSQL releases the lock and a standby planner may take it. So

- ``verify`` asks the server, on the lock's own connection, whether that backend is still
  granted the lock (the planner loop calls it before every step); a dead connection or a lock
  the server no longer grants drops the lock at once;
- plan writes carry a fence: a planner thread sets ``fence_pid`` (the backend holding its lock),
  and ``check_fence``, called inside every plan-write transaction right after the plan write
  lock (``plan_write.write_lock``), refuses the write with ``PlannerFenced`` unless that backend
  still holds the planner lock. A planner that lost its lock can thus not write one more plan,
  even in the moment before its next ``verify``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
from contextvars import ContextVar
from pathlib import Path
from typing import IO

from sqlalchemy import Connection, Engine, text
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

#: PostgreSQL session advisory lock held by the one running planner.
PLANNER_LOCK_KEY = 0x706C616E  # "plan"

# pg_locks shows a bigint advisory key as classid (high half), objid (low half), objsubid = 1.
_HOLDS = text(
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid::bigint = 0 "
    "AND objid::bigint = :k AND objsubid = 1 AND granted AND pid = :pid"
)

_FENCE: ContextVar[int | None] = ContextVar("gridshift_planner_fence", default=None)


class PlannerFenced(RuntimeError):
    """A plan write by a planner whose lock the server no longer grants (refused)."""


def set_fence(backend_pid: int | None) -> None:
    """Plan writes of this thread (context) must come from the holder of ``backend_pid``'s lock.

    ``None`` lifts the fence (the tick, tests and the demo write plans without one).
    """
    _FENCE.set(backend_pid)


def check_fence(session: Session) -> None:
    """Inside a plan-write transaction: refuse it unless this planner still holds the lock.

    Raises:
        PlannerFenced: the fence's backend no longer holds the planner lock (its connection
            ended; another planner may hold the lock now). The transaction must roll back.
    """
    pid = _FENCE.get()
    if pid is None or session.get_bind().dialect.name != "postgresql":
        return
    if not session.scalar(_HOLDS, {"k": PLANNER_LOCK_KEY, "pid": pid}):
        raise PlannerFenced(
            f"this planner's lock (backend {pid}) is no longer granted by the server: its "
            "connection ended and another planner may hold the lock; plan write refused"
        )


class PlannerLock:
    """At most one planner per database; ``acquire`` does not block."""

    def __init__(self, engine: Engine) -> None:
        """Lock for the database behind ``engine``."""
        self._engine = engine
        self._conn: Connection | None = None
        self._file: IO[str] | None = None
        #: the PostgreSQL backend holding the lock (the fence of this planner's plan writes)
        self.backend_pid: int | None = None

    @property
    def held(self) -> bool:
        """Whether this instance has the lock's connection or file (see ``verify``)."""
        return self._conn is not None or self._file is not None

    def acquire(self) -> bool:
        """Take the lock if free; True when held afterwards.

        Raises:
            sqlalchemy.exc.DBAPIError: the database could not be reached (retry later).
        """
        if self.held:
            return True
        if self._engine.dialect.name == "postgresql":
            return self._acquire_pg()
        path = Path(self._engine.url.database or "gridshift.db")
        handle = open(f"{path}.planner.lock", "a")  # noqa: SIM115 (held while planning)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self._file = handle
        return True

    def _acquire_pg(self) -> bool:
        conn = self._engine.connect()
        try:
            got = bool(
                conn.execute(
                    text("SELECT pg_try_advisory_lock(:k)"), {"k": PLANNER_LOCK_KEY}
                ).scalar_one()
            )
            pid = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
            conn.commit()
        except BaseException:
            _close_quietly(conn)
            raise
        if not got:
            conn.close()
            return False
        self._conn, self.backend_pid = conn, pid
        return True

    def verify(self) -> bool:
        """Ask the server whether this instance still holds the lock; drop it when not.

        PostgreSQL: one query on the lock's own connection (``pg_locks`` for its backend); an
        error (the connection was terminated) or a lock no longer granted drops the lock, so
        ``held`` turns False and the caller must stop planning. SQLite: the file lock holds as
        long as the file is open.
        """
        if self._conn is None:
            return self._file is not None
        try:
            ok = bool(
                self._conn.execute(
                    _HOLDS, {"k": PLANNER_LOCK_KEY, "pid": self.backend_pid}
                ).scalar()
            )
            self._conn.commit()
        except Exception as e:  # the connection is gone (backend terminated, network)
            log.warning("the planner lock's connection failed (%s): lock lost", e)
            ok = False
        if not ok:
            self.drop()
        return ok

    def drop(self) -> None:
        """Forget a lock the server no longer grants (close its connection, no unlock)."""
        if self._conn is not None:
            _close_quietly(self._conn)
        self._conn, self.backend_pid = None, None

    def release(self) -> None:
        """Give the lock back (closing its connection or file); never raises for a dead one."""
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PLANNER_LOCK_KEY})
                self._conn.commit()
            except Exception as e:  # a dead connection: the server released the lock already
                log.info("planner lock: unlock failed (%s); its connection is closed", e)
            finally:
                self.drop()
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def _close_quietly(conn: Connection) -> None:
    with contextlib.suppress(Exception):
        conn.invalidate()
    with contextlib.suppress(Exception):
        conn.close()
