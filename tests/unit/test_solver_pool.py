"""The planner's solver child exits by itself when the planner process is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

PARENT = """
import os, sys, time
from scheduler.dispatch.solver_pool import solver_pool
if __name__ == "__main__":
    pool = solver_pool()
    print(pool.submit(os.getpid).result(timeout=60), flush=True)
    time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/status") as f:  # a zombie waiting for its reaper is gone too
        return "zombie" not in f.read()


@pytest.mark.slow  # starts processes
def test_the_solver_child_exits_when_the_planner_is_killed() -> None:
    # Given a planner-like process holding a spawned solver child
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True, cwd=os.getcwd()
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert child != parent.pid and _alive(child)
        # When the planner is killed (no clean-up runs)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        # Then its solver child is gone within a few of its parent polls
        deadline = time.monotonic() + 15
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(child)
    finally:
        if parent.poll() is None:
            parent.kill()
