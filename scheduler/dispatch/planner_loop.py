"""The planner loop: re-planning off the dispatch path, one instance per database.

The tick (``scheduler.dispatch.tick``) only queues due shards, expires leases and finalises
batches; it never waits on a solve. This loop, a thread of ``gridshift dispatch`` or its own
process (``gridshift planner``), watches the store and publishes plan versions:

- ``new_batch`` (debounced by ``planner_debounce_s`` so that a burst of arrivals is planned
  once) places the new parts around the current plan at once (``fast_path.add_new_parts``);
  a full re-plan (``scheduler.dispatch.replan.replan``) follows as ``consolidate`` after
  ``planner_full_every_s``; ``slot_boundary`` and ``forecast_update`` (the reused signals are
  older than ``signals_fresh_s``) re-plan in full;
- a failed or over-budget re-plan leaves the current plan in force, is logged, stored as a
  ``failed`` plan version (``/v1/plans``, dashboard, ``gridshift_plans_total``) and retried
  after ``planner_retry_s``;
- ``PlannerLock`` keeps to one planner per database (PostgreSQL advisory lock; on SQLite an
  exclusive lock on a file beside the database).
"""

from __future__ import annotations

import fcntl
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Connection, Engine, select, text
from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import Settings
from scheduler.dispatch.fast_path import add_new_parts
from scheduler.dispatch.plan_write import any_free
from scheduler.dispatch.replan import Planner, default_horizon_signals, replan
from scheduler.dispatch.signals import HorizonSignals
from scheduler.dispatch.slots import slots_between
from scheduler.dispatch.solver_pool import solver_pool
from scheduler.dispatch.triggers import record_failure, replan_trigger
from scheduler.domain import Fleet, SlotSignal
from scheduler.store.tables import PlanRecord, now_utc

log = logging.getLogger(__name__)

#: PostgreSQL session advisory lock held by the one running planner.
PLANNER_LOCK_KEY = 0x706C616E  # "plan"


class SignalCache:
    """Horizon signals reused while younger than ``fresh_s`` (by the planner's clock).

    A re-plan asks for the signals of its slots; the cache answers from the last fetch when it
    covers those slots and is fresh, and fetches again otherwise (providers, their cache table
    and fallbacks are behind ``fetch``).
    """

    def __init__(self, fetch: HorizonSignals, fresh_s: float) -> None:
        """Wrap ``fetch``; ``fresh_s`` = 0 fetches on every call."""
        self._fetch = fetch
        self._fresh = timedelta(seconds=fresh_s)
        self._at: datetime | None = None
        self._signals: dict[tuple[str, datetime], SlotSignal] = {}
        self._lock = threading.Lock()
        self.fetches = 0

    def stale(self, now: datetime) -> bool:
        """Whether the next re-plan would fetch again because the signals are old."""
        return self._at is not None and now - self._at >= self._fresh

    def __call__(
        self, fleet: Fleet, slots: tuple[datetime, ...], now: datetime
    ) -> Mapping[tuple[str, datetime], SlotSignal]:
        """The signals of ``slots`` for every site, fetched only when needed (thread-safe)."""
        with self._lock:
            return self._get(fleet, slots, now)

    def _get(
        self, fleet: Fleet, slots: tuple[datetime, ...], now: datetime
    ) -> Mapping[tuple[str, datetime], SlotSignal]:
        wanted = set(slots)
        have = {slot for _, slot in self._signals}
        if self._at is None or self.stale(now) or not wanted <= have:
            self._signals = dict(self._fetch(fleet, slots, now))
            self._at = now
            self.fetches += 1
        return {k: v for k, v in self._signals.items() if k[1] in wanted}


class PlannerLock:
    """At most one planner per database; ``acquire`` does not block."""

    def __init__(self, engine: Engine) -> None:
        """Lock for the database behind ``engine``."""
        self._engine = engine
        self._conn: Connection | None = None
        self._file: IO[str] | None = None

    @property
    def held(self) -> bool:
        """Whether this instance holds the lock."""
        return self._conn is not None or self._file is not None

    def acquire(self) -> bool:
        """Take the lock if free; True when held afterwards."""
        if self.held:
            return True
        if self._engine.dialect.name == "postgresql":
            conn = self._engine.connect()
            got = bool(
                conn.execute(
                    text("SELECT pg_try_advisory_lock(:k)"), {"k": PLANNER_LOCK_KEY}
                ).scalar_one()
            )
            conn.commit()
            if got:
                self._conn = conn
            else:
                conn.close()
            return got
        path = Path(self._engine.url.database or "gridshift.db")
        handle = open(f"{path}.planner.lock", "a")  # noqa: SIM115 (held while planning)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self._file = handle
        return True

    def release(self) -> None:
        """Give the lock back (closing its connection or file)."""
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PLANNER_LOCK_KEY})
                self._conn.commit()
            finally:
                self._conn.close()
                self._conn = None
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


@dataclass
class PlannerState:
    """What the loop did last (logs, tests, the benchmark)."""

    plans: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    last_trigger: str | None = None
    last_replan_s: float = 0.0
    retry_after: float = 0.0  # monotonic time before which a failed re-plan is not retried
    last_full: float = 0.0  # monotonic time of the last full re-plan
    pending_full: bool = False  # fast-path additions since the last full re-plan
    last_fast: float = 0.0  # monotonic time of the last fast-path addition


class PlannerLoop:
    """Watches the store and re-plans; see the module docstring."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        settings: Settings,
        fleet: Fleet,
        *,
        signals_for: HorizonSignals | None = None,
        planner: Planner | None = None,
        clock: Callable[[], datetime] = now_utc,
    ) -> None:
        """Plan through ``factory``; ``signals_for`` is wrapped in a ``SignalCache``."""
        self.factory = factory
        self.settings = settings
        self.fleet = fleet
        self.signals = SignalCache(
            signals_for or default_horizon_signals(settings, factory), settings.signals_fresh_s
        )
        self.planner = planner
        self.clock = clock
        self.state = PlannerState()
        #: set by ``run`` (``planner_full_subprocess``): full re-plans run in a child process
        self.pool: ProcessPoolExecutor | None = None

    def trigger(self, now: datetime) -> str | None:
        """Why to re-plan now, or None (``replan_trigger``; ``forecast_update``: the reused
        signals are stale; ``consolidate``: fast-path additions wait for a full re-plan)."""
        with self.factory() as s:
            why = replan_trigger(s, self.fleet, now)
            if why is None and self.signals.stale(now) and any_free(s, now):
                why = "forecast_update"
        full_due = time.monotonic() - self.state.last_full >= self.settings.planner_full_every_s
        if why is None and self.state.pending_full and full_due:
            why = "consolidate"
        return why

    def _has_current(self) -> bool:
        with self.factory() as s:
            return (
                s.scalar(select(PlanRecord.id).where(PlanRecord.is_current.is_(True))) is not None
            )

    def step(self, stop: threading.Event | None = None, mode: str = "both") -> int | None:
        """Re-plan once if something calls for it; returns the new plan id, if any.

        ``mode``: ``both`` (one thread does everything), ``fast`` (only new batches, by the
        fast path) or ``full`` (everything else; new batches too while no plan is current).
        ``run`` drives ``fast`` and ``full`` in two threads, so a new batch never waits for a
        full re-plan in progress.

        Never raises for a planning failure: it is logged, stored as a ``failed`` plan
        version and retried after ``planner_retry_s``; the current plan stays in force.
        """
        if time.monotonic() < self.state.retry_after:
            return None
        why = self.trigger(self.clock())
        if why is None:
            return None
        fast_ok = self.settings.planner_fast_path
        if mode == "fast" and (why != "new_batch" or not fast_ok):
            return None
        if mode == "full" and why == "new_batch" and fast_ok and self._has_current():
            return None
        if why == "new_batch" and self.settings.planner_debounce_s > 0:
            if stop is not None:
                stop.wait(self.settings.planner_debounce_s)
            else:
                time.sleep(self.settings.planner_debounce_s)
        now = self.clock()
        self.state.last_trigger = why
        started = time.perf_counter()
        try:
            plan_id = None
            if why == "new_batch" and fast_ok:
                plan_id = add_new_parts(
                    self.factory,
                    self.settings,
                    self.fleet,
                    now,
                    signals_for=self.signals,
                    planner=self.planner,
                )
                if plan_id is not None:
                    self.state.pending_full, self.state.last_fast = True, time.monotonic()
            if plan_id is None and mode != "fast":
                mark = time.monotonic()
                plan_id = self._full(now, why)
                # fast-path additions made while it solved are not in it: still pending
                self.state.last_full = mark
                self.state.pending_full = self.state.last_fast > mark
        except Exception as e:  # any failure: keep the current plan, make it visible, retry
            self.state.last_replan_s = time.perf_counter() - started
            self.state.failures.append(str(e))
            self.state.retry_after = time.monotonic() + self.settings.planner_retry_s
            log.exception("re-plan (%s) failed; the current plan stays in force: %s", why, e)
            try:
                record_failure(self.factory, self.fleet, now, why, str(e))
            except Exception:  # the store itself may be what failed
                log.exception("could not record the failed re-plan")
            return None
        self.state.last_replan_s = time.perf_counter() - started
        if plan_id is not None:
            self.state.plans.append(plan_id)
        return plan_id

    def _full(self, now: datetime, why: str) -> int | None:
        """A full re-plan: in this process, or in the child process when ``self.pool`` is set."""
        if self.pool is None:
            return replan(
                self.factory,
                self.settings,
                self.fleet,
                now,
                trigger=why,
                signals_for=self.signals,
                planner=self.planner,
            )
        slots = slots_between(
            now, now + timedelta(hours=self.settings.horizon_hours), self.fleet.slot_minutes
        )
        signals = dict(self.signals(self.fleet, slots, now))
        result: int | None = self.pool.submit(
            _full_replan_child, self.settings, self.fleet, now, why, signals
        ).result()
        return result

    def _loop(self, stop: threading.Event, mode: str, held: Callable[[], bool]) -> None:
        while not stop.is_set():
            if held():
                try:
                    self.step(stop, mode)
                except Exception:  # the trigger query failed (database away): try again
                    log.exception("planner step (%s) failed; retrying", mode)
            stop.wait(self.settings.planner_poll_s)

    def run(self, stop: threading.Event, lock: PlannerLock | None = None) -> None:
        """Loop until ``stop`` is set, holding the lock (retrying until it is free).

        Two threads: this one runs full re-plans, a second one the fast path for new batches
        (``step`` modes ``full`` and ``fast``); their writes are serialised by the plan write
        lock, and a full re-plan leaves alone the parts it did not plan.
        """
        if self.settings.planner_full_subprocess and self.planner is None:
            # the full solve holds the GIL for long Python stretches; in a child process it
            # does not slow the fast path's thread down (spawned: no forked locks or sockets)
            self.pool = solver_pool()
        fast = threading.Thread(
            target=self._loop,
            args=(stop, "fast", lambda: lock is None or lock.held),
            name="gridshift-planner-fast",
            daemon=True,
        )
        warned = False
        try:
            while not stop.is_set():
                if lock is not None and not lock.acquire():
                    if not warned:
                        log.warning("another planner holds the lock for this database; waiting")
                        warned = True
                    stop.wait(self.settings.planner_poll_s)
                    continue
                if not fast.is_alive() and fast.ident is None:
                    fast.start()
                try:
                    self.step(stop, "full")
                except Exception:  # the trigger query failed (database away): try again
                    log.exception("planner step failed; retrying")
                stop.wait(self.settings.planner_poll_s)
        finally:
            stop.set()
            if fast.ident is not None:
                fast.join(timeout=60)
            if self.pool is not None:
                self.pool.shutdown(wait=False, cancel_futures=True)
                self.pool = None
            if lock is not None:
                lock.release()


_CHILD_FACTORY: sessionmaker[Session] | None = None


def _full_replan_child(
    settings: Settings,
    fleet: Fleet,
    now: datetime,
    trigger: str,
    signals: Mapping[tuple[str, datetime], SlotSignal],
) -> int | None:
    """A full re-plan in the planner's child process, on the signals the parent reuses."""
    global _CHILD_FACTORY
    if _CHILD_FACTORY is None:
        from scheduler.store.db import engine_from_settings, session_factory

        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        _CHILD_FACTORY = session_factory(engine_from_settings(settings))

    def given(
        _f: Fleet, slots: tuple[datetime, ...], _n: datetime
    ) -> Mapping[tuple[str, datetime], SlotSignal]:
        wanted = set(slots)
        return {k: v for k, v in signals.items() if k[1] in wanted}

    return replan(_CHILD_FACTORY, settings, fleet, now, trigger=trigger, signals_for=given)


def start_planner_thread(
    factory: sessionmaker[Session], settings: Settings, fleet: Fleet, **kw: Any
) -> tuple[threading.Thread, threading.Event, PlannerLoop]:
    """Run a ``PlannerLoop`` (holding the ``PlannerLock``) in a daemon thread.

    Returns:
        ``(thread, stop, loop)``: set ``stop`` and join the thread to end it.
    """
    loop = PlannerLoop(factory, settings, fleet, **kw)
    stop = threading.Event()
    engine = factory.kw["bind"]
    thread = threading.Thread(
        target=loop.run, args=(stop, PlannerLock(engine)), name="gridshift-planner", daemon=True
    )
    thread.start()
    return thread, stop, loop
