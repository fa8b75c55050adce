"""The planner's child process for full re-plans, which never outlives the planner.

A full solve holds the GIL for long Python stretches, so the planner runs it in a spawned
child (no forked locks or sockets). A child of a ``ProcessPoolExecutor`` would go on waiting for
work after its parent is killed (SIGKILL runs no clean-up), so each child watches its parent and
exits as soon as the parent is gone. ``full_replan_child`` is what it runs: a full re-plan on the
signals the planner reuses, its plan write fenced on the planner's lock.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import Settings
from scheduler.dispatch.planner_lock import set_fence
from scheduler.domain import Fleet, SlotSignal

PARENT_POLL_S = 1.0


def _exit_with_parent(parent_pid: int) -> None:
    """Initializer of the child: a daemon thread that ends the child once the parent is gone."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_S)
        os._exit(0)

    threading.Thread(target=watch, name="gridshift-parent-watch", daemon=True).start()


def solver_pool() -> ProcessPoolExecutor:
    """One spawned solver process that exits by itself when this process dies."""
    return ProcessPoolExecutor(
        1,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_exit_with_parent,
        initargs=(os.getpid(),),
    )


_CHILD_FACTORY: sessionmaker[Session] | None = None


def full_replan_child(
    settings: Settings,
    fleet: Fleet,
    now: datetime,
    trigger: str,
    signals: Mapping[tuple[str, datetime], SlotSignal],
    fence_pid: int | None = None,
) -> int | None:
    """A full re-plan in the planner's child process, on the signals the parent reuses.

    Its plan write is fenced on the parent's lock (``fence_pid``), like the parent's own.
    """
    global _CHILD_FACTORY
    set_fence(fence_pid)
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

    from scheduler.dispatch.replan import replan

    return replan(_CHILD_FACTORY, settings, fleet, now, trigger=trigger, signals_for=given)
