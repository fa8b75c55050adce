"""Keep HiGHS's start-up banner out of gridshift's output.

highspy prints ``Running HiGHS ... Copyright`` from C++ to file descriptor 1 the first time a
``Highs`` object is made in a process, before any option can silence it, so it lands in the
middle of a command's output (``gridshift demo``, ``gridshift plan``). The first instance is
made here with descriptor 1 pointed at the null device; later instances print nothing.
"""

from __future__ import annotations

import os
import sys
import threading

_lock = threading.Lock()
_done = False


def silence_highs_banner() -> None:
    """Make the process's first ``highspy.Highs`` with stdout muted (once; no-op without highspy)."""
    global _done
    with _lock:
        if _done:
            return
        _done = True
        try:
            import highspy
        except ImportError:
            return
        sys.stdout.flush()
        saved = os.dup(1)
        try:
            with open(os.devnull, "wb") as null:
                os.dup2(null.fileno(), 1)
                highspy.Highs()
        finally:
            os.dup2(saved, 1)
            os.close(saved)
