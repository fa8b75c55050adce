"""The dispatcher's planner thread, kept alive and observable.

``gridshift dispatch`` runs the planner loop (``scheduler.dispatch.planner_loop``) in a thread.
``PlannerSupervisor.ensure_alive``, called by every tick, restarts that thread if it ended for
any reason (the loop itself retries database errors; this covers what it cannot foresee), and
``health`` is the planner's state for the dispatcher's ``/healthz``, its metrics
(``gridshift_planner_up``, ``..._restarts_total``, ``..._lock_losses_total``) and logs.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import Settings
from scheduler.dispatch.planner_lock import PlannerLock
from scheduler.dispatch.planner_loop import PlannerLoop
from scheduler.domain import Fleet

log = logging.getLogger(__name__)


class PlannerSupervisor:
    """Owns the planner thread: start, restart when dead, stop, report."""

    def __init__(
        self, factory: sessionmaker[Session], settings: Settings, fleet: Fleet, **kw: Any
    ) -> None:
        """A supervisor of a ``PlannerLoop(factory, settings, fleet, **kw)`` (not started)."""
        self.loop = PlannerLoop(factory, settings, fleet, **kw)
        self.engine = factory.kw["bind"]
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.restarts = 0
        self.last_death: str | None = None

    def start(self) -> PlannerSupervisor:
        """Start the planner thread (holding a fresh ``PlannerLock``)."""
        self.thread = threading.Thread(target=self._run, name="gridshift-planner", daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            self.loop.run(self.stop_event, PlannerLock(self.engine))
        except BaseException as e:  # recorded for ensure_alive's log and health()
            self.last_death = f"{type(e).__name__}: {e}"
            raise

    def alive(self) -> bool:
        """Whether the planner thread runs."""
        return self.thread is not None and self.thread.is_alive()

    def ensure_alive(self) -> bool:
        """Restart the planner thread if it ended while not asked to stop; whether it did."""
        if self.stop_event.is_set() or self.alive():
            return False
        self.restarts += 1
        log.error(
            "the planner thread had ended (%s); restarting it (restart %d)",
            self.last_death or "no error recorded",
            self.restarts,
        )
        self.start()
        return True

    def stop(self, timeout_s: float = 60.0) -> None:
        """Stop the planner thread and wait for it (the lock is released on its way out)."""
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(timeout=timeout_s)

    def health(self) -> dict[str, Any]:
        """The planner's state: ``up`` is True while its thread runs and it is not failing.

        ``status``: ``planning`` (holds the lock, checked with the server), ``standby`` (another
        planner holds it: healthy too), ``db_error`` (backing off), ``starting``, ``stopped``.
        """
        st = self.loop.state
        alive = self.alive()
        return {
            "alive": alive,
            "up": alive and st.status in ("planning", "standby"),
            "status": st.status if alive else "dead",
            "holding_lock": st.holding,
            "restarts": self.restarts,
            "lock_losses": st.lock_losses,
            "db_errors": st.db_errors,
            "plans": len(st.plans),
            "failures": len(st.failures),
            "last_ok_age_s": None
            if st.last_ok is None
            else round(time.monotonic() - st.last_ok, 1),
            "last_error": st.last_error or self.last_death,
        }
