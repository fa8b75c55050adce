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
- ``PlannerLock`` (``scheduler.dispatch.planner_lock``) keeps to one planner per database
  (PostgreSQL advisory lock; on SQLite an exclusive lock on a file beside the database); the
  loop checks it with the server before every step and its plan writes are fenced, so a planner
  whose lock connection ended stops planning at once;
- every database call, lock acquisition included, is retried with backoff (1 s doubling to
  ``DB_BACKOFF_MAX_S``): a database blip delays planning, it never ends the loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SATimeoutError
from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import Settings
from scheduler.dispatch.fast_path import add_new_parts
from scheduler.dispatch.plan_write import any_free
from scheduler.dispatch.planner_lock import (
    PLANNER_LOCK_KEY,
    PlannerFenced,
    PlannerLock,
    set_fence,
)
from scheduler.dispatch.replan import Planner, default_horizon_signals, replan
from scheduler.dispatch.signals import HorizonSignals
from scheduler.dispatch.solver_pool import full_replan_child, solver_pool
from scheduler.dispatch.triggers import record_failure, replan_trigger
from scheduler.domain import Fleet, SlotSignal
from scheduler.slots import slots_between
from scheduler.store.tables import PlanRecord, now_utc

log = logging.getLogger(__name__)

__all__ = [
    "PLANNER_LOCK_KEY",
    "PlannerFenced",
    "PlannerLock",
    "PlannerLoop",
    "PlannerState",
    "SignalCache",
]

#: Longest wait (s) between retries while the database is unreachable.
DB_BACKOFF_MAX_S = 30.0
#: Errors that say the database is away (a terminated backend, a dropped connection, a pool
#: timeout): retried with the database backoff, not stored as a failed plan version.
DB_AWAY = (OperationalError, InterfaceError, SATimeoutError)


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
    #: ``starting``, ``standby`` (another planner holds the lock), ``planning`` (lock held and
    #: checked), ``db_error`` (backing off), ``stopped``
    status: str = "starting"
    holding: bool = False  # the lock is held and the server said so at the last check
    fence_pid: int | None = None  # backend holding the lock: plan writes are fenced on it
    last_error: str | None = None
    db_errors: int = 0  # consecutive database errors (0 after a good step)
    lock_losses: int = 0
    last_ok: float | None = None  # monotonic time of the last step that reached the database


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
        version and retried after ``planner_retry_s``; the current plan stays in force. A
        database that is away (``DB_AWAY``) and a lost lock (``PlannerFenced``) raise: the loop
        backs off, or stops planning.
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
        except PlannerFenced:
            raise  # the lock is lost: the loop stops planning, nothing to record
        except DB_AWAY as e:  # the database, not the plan: the loop backs off (1 s doubling)
            self.state.last_replan_s = time.perf_counter() - started
            raise e
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
            full_replan_child, self.settings, self.fleet, now, why, signals, self.state.fence_pid
        ).result()
        return result

    def _guarded_step(self, stop: threading.Event, mode: str) -> None:
        """One fenced ``step``; a lost lock or a database error is recorded, never raised."""
        set_fence(self.state.fence_pid)
        try:
            self.step(stop, mode)
        except PlannerFenced as e:
            self._lost(str(e))
            return
        except Exception as e:  # the trigger query failed (database away): back off, retry
            self._db_error(e, mode)
            return
        self.state.db_errors, self.state.last_ok = 0, time.monotonic()

    def _loop(self, stop: threading.Event, done: threading.Event, mode: str) -> None:
        """The fast-path thread: steps while the main thread holds (and checked) the lock."""
        while not (stop.is_set() or done.is_set()):
            if self.state.holding:
                self._guarded_step(stop, mode)
            stop.wait(self._wait_s())

    def _wait_s(self) -> float:
        """The poll period, or the database backoff (1 s doubling) after errors."""
        if self.state.db_errors == 0:
            return self.settings.planner_poll_s
        backoff = min(2.0 ** (self.state.db_errors - 1), DB_BACKOFF_MAX_S)
        return max(self.settings.planner_poll_s, backoff)

    def _db_error(self, error: BaseException, where: str) -> None:
        self.state.db_errors += 1
        self.state.last_error = f"{type(error).__name__}: {error}"
        self.state.status = "db_error"
        log.warning(
            "planner (%s): database error, retrying in %.0f s: %s", where, self._wait_s(), error
        )

    def _lost(self, why: str) -> None:
        """Stop planning at once: the lock is no longer ours."""
        if self.state.holding:
            self.state.lock_losses += 1
            log.error("planner lost its lock, stopped planning: %s", why)
        self.state.holding, self.state.fence_pid = False, None
        self.state.status, self.state.last_error = "standby", why

    def _hold(self, lock: PlannerLock | None) -> bool:
        """Check the lock with the server, (re)acquire it if free; whether to plan now."""
        if lock is None:
            self.state.holding, self.state.status = True, "planning"
            return True
        if lock.held and not lock.verify():
            self._lost("the lock's database connection ended (the server released the lock)")
        if not lock.held:
            self.state.holding = False
            if not lock.acquire():
                if self.state.status != "standby":
                    log.warning("another planner holds the lock for this database; waiting")
                self.state.status = "standby"
                return False
            log.info("planner lock acquired (backend %s)", lock.backend_pid)
        self.state.fence_pid = lock.backend_pid
        self.state.holding, self.state.status = True, "planning"
        return True

    def run(self, stop: threading.Event, lock: PlannerLock | None = None) -> None:
        """Loop until ``stop`` is set, holding the lock (retrying until it is free).

        Two threads: this one runs full re-plans, a second one the fast path for new batches
        (``step`` modes ``full`` and ``fast``); their writes are serialised by the plan write
        lock, and a full re-plan leaves alone the parts it did not plan. Before each step the
        lock is checked with the server; every database error (lock acquisition included) is
        logged and retried with backoff, so only ``stop`` ends the loop.
        """
        if self.settings.planner_full_subprocess and self.planner is None:
            # the full solve holds the GIL for long Python stretches; in a child process it
            # does not slow the fast path's thread down (spawned: no forked locks or sockets)
            self.pool = solver_pool()
        done = threading.Event()
        fast = threading.Thread(
            target=self._loop, args=(stop, done, "fast"), name="gridshift-planner-fast", daemon=True
        )
        try:
            while not stop.is_set():
                try:
                    holding = self._hold(lock)
                except Exception as e:  # the database is away: back off and try again
                    self._db_error(e, "lock")
                    stop.wait(self._wait_s())
                    continue
                if holding:
                    if fast.ident is None:
                        fast.start()
                    self._guarded_step(stop, "full")
                stop.wait(self._wait_s())
        finally:
            done.set()
            self.state.holding, self.state.fence_pid, self.state.status = False, None, "stopped"
            if fast.ident is not None:
                fast.join(timeout=60)
            if self.pool is not None:
                self.pool.shutdown(wait=False, cancel_futures=True)
                self.pool = None
            if lock is not None:
                lock.release()
