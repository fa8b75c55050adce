"""Apportioning a shared energy counter (a RAPL CPU package) among overlapping meter windows.

Two workers on one CPU package each see the whole package's counter; booking both windows'
full deltas counts shared energy twice (36 J booked as 72 J). Every window of the host that
reads a package registers in one small state file per package (``fcntl``-locked, so worker
processes agree): at each read (a window's begin, a poll, its end) the counter's delta since
the last read by ANY window is split equally among the windows open over that interval, so
each interval's energy is booked exactly once, whatever the overlap. A window that shared its
package says so (``measured-rapl-shared``, with the most windows it shared with).

Windows of processes that died are dropped at the next read (their part is not booked).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_DIR = Path(tempfile.gettempdir()) / "gridshift-rapl"
"""Host-wide: every worker of the machine reads the same packages."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True, slots=True)
class Share:
    """What one window was booked of a shared counter: microjoules and the most windows open
    at once during it (1: it had the package to itself)."""

    uj: float
    peers: int


class SharedPackage:
    """The state file of one counter (a package) shared by the windows of this host."""

    def __init__(self, counter_path: Path, max_range_uj: int, directory: Path = DEFAULT_DIR):
        """One state file per counter path (hashed) under ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        key = hashlib.sha256(str(counter_path.resolve()).encode()).hexdigest()[:16]
        self.path = directory / f"{key}.json"
        self.max_range_uj = max_range_uj

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        with open(self.path.with_suffix(".lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state: dict[str, Any] = (
                    json.loads(self.path.read_text()) if self.path.exists() else {}
                )
                state.setdefault("open", {})
                yield state
                tmp = self.path.with_suffix(".tmp")
                tmp.write_text(json.dumps(state))
                tmp.replace(self.path)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _account(self, state: dict[str, Any], now_uj: int) -> None:
        """Split the delta since the last read among the live open windows."""
        opened = state["open"]
        for wid in [w for w, v in opened.items() if not _alive(int(v["pid"]))]:
            del opened[wid]
        last = state.get("last_uj")
        if last is not None and opened:
            delta = now_uj - last if now_uj >= last else self.max_range_uj - last + now_uj
            for v in opened.values():
                v["uj"] += delta / len(opened)
                v["peers"] = max(int(v["peers"]), len(opened))
        state["last_uj"] = now_uj

    def begin(self, now_uj: int) -> str:
        """Open a window at counter reading ``now_uj``; returns its id."""
        wid = uuid.uuid4().hex
        with self._locked() as state:
            self._account(state, now_uj)
            state["open"][wid] = {"pid": os.getpid(), "uj": 0.0, "peers": 1}
            n = len(state["open"])
            for v in state["open"].values():
                v["peers"] = max(int(v["peers"]), n)
        return wid

    def read(self, now_uj: int) -> None:
        """Account a read (a poll) at ``now_uj``."""
        with self._locked() as state:
            self._account(state, now_uj)

    def end(self, wid: str, now_uj: int) -> Share:
        """Close window ``wid`` at ``now_uj``: its share of the counter since it began."""
        with self._locked() as state:
            self._account(state, now_uj)
            mine = state["open"].pop(wid, {"uj": 0.0, "peers": 1})
            if not state["open"]:
                state.pop("last_uj", None)  # nobody reads: the next begin starts afresh
        return Share(float(mine["uj"]), int(mine["peers"]))
