"""The planner's child process for full re-plans, which never outlives the planner.

A full solve holds the GIL for long Python stretches, so the planner runs it in a spawned
child (no forked locks or sockets). A child of a ``ProcessPoolExecutor`` would go on waiting for
work after its parent is killed (SIGKILL runs no clean-up), so each child watches its parent and
exits as soon as the parent is gone.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor

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
