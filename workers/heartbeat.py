"""The lease heartbeat: a thread extending a shard's lease while its worker runs it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import Settings
from scheduler.dispatch.leases import Claim, extend_lease

log = logging.getLogger(__name__)


class Heartbeat(threading.Thread):
    """Extends the lease every ``heartbeat_s`` until stopped; records a lost lease."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        claim: Claim,
        settings: Settings,
        clock: Callable[[], datetime],
    ) -> None:
        super().__init__(name=f"heartbeat-{claim.shard_id}", daemon=True)
        self._factory, self._claim, self._settings, self._clock = factory, claim, settings, clock
        self._stop_event = threading.Event()
        self.lost = False

    def run(self) -> None:
        while not self._stop_event.wait(self._settings.heartbeat_s):
            try:
                ok = extend_lease(
                    self._factory, self._claim, now=self._clock(), lease_s=self._settings.lease_s
                )
            except Exception:  # a transient DB error: try again at the next beat
                log.exception("heartbeat of shard %s failed", self._claim.shard_id)
                continue
            if not ok:
                self.lost = True
                return

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)
