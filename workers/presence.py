"""The worker's presence beat: a thread writing ``worker_presence`` every heartbeat.

It starts when Celery says the worker is ready (so a worker that has not run a shard yet is
listed in the console's Workers view and counted live in its pool), says ``running`` and the
shard while one runs, ``low_disk`` or ``backoff`` (with the free space and storage faults in its
detail) while its data dir keeps it from claiming (``workers.storage``), and ``stopped`` on a
clean shutdown. A failed write is logged and retried
at the next beat: presence is information, never a reason to stop working.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

from sqlalchemy.orm import Session, sessionmaker

from scheduler.clock import now_utc
from scheduler.store.presence import beat
from workers.storage import StorageGuard

log = logging.getLogger(__name__)


class PresenceBeat(threading.Thread):
    """Beats for worker ``node`` of ``site.pool`` every ``every_s`` until stopped."""

    def __init__(
        self, sessions: sessionmaker[Session], node: str, site: str, pool: str, every_s: float
    ) -> None:
        super().__init__(name=f"presence-{node}", daemon=True)
        self.sessions, self.node, self.site, self.pool, self.every_s = (
            sessions,
            node,
            site,
            pool,
            every_s,
        )
        self.shard_id: str | None = None
        self.detail: str | None = None
        #: the worker's data-dir guard: a full disk or a storage backoff shows in the beat
        self.storage: StorageGuard | None = None
        self._stop_event = threading.Event()
        self._write_lock = threading.Lock()  # the thread and the task write the same row

    def write(self, state: str | None = None) -> None:
        """One beat now: ``state`` or idle/running from the shard in hand."""
        storage_state, storage_detail = self._storage()
        state = state or storage_state or ("running" if self.shard_id else "idle")
        try:
            with self._write_lock, self.sessions() as s, s.begin():
                beat(
                    s,
                    worker=self.node,
                    site=self.site,
                    pool=self.pool,
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    state=state,
                    now=now_utc(),
                    shard_id=self.shard_id,
                    detail=storage_detail or self.detail,
                )
        except Exception:  # the database may blip: the next beat tries again
            log.exception("presence beat of %s failed", self.node)

    def _storage(self) -> tuple[str | None, str | None]:
        """``(low_disk | backoff, what it is)`` while the data dir stops claims, else Nones.

        The guard is checked afresh (free space now), so an idle worker's beat says so too.
        """
        guard = self.storage
        if guard is None:
            return None, None
        try:
            guard.check()
        except Exception:  # a beat never fails for its detail
            log.exception("storage check of %s failed", self.node)
        snap = guard.snapshot()
        if snap["state"] == "ok":
            return None, None
        return str(snap["state"]), (
            f"storage {snap['state']}: {snap['free_disk_mb']} MiB free in the data dir "
            f"(GRIDSHIFT_MIN_FREE_DISK_MB={snap['min_free_disk_mb']}); claims no shard; "
            f"{snap['storage_faults']} storage faults, {snap['deferrals']} shards left queued; "
            f"last error: {snap['last_error']}"
        )

    def running(self, shard_id: str | None) -> None:
        """The worker took (``shard_id``) or finished (None) a shard: say so at once."""
        self.shard_id = shard_id
        self.write()

    def run(self) -> None:
        self.write()
        while not self._stop_event.wait(self.every_s):
            self.write()

    def stop(self) -> None:
        """Stop beating and leave the row saying ``stopped``."""
        self._stop_event.set()
        self.write("stopped")
