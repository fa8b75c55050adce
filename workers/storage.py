"""Storage faults: a full, read-only or failing data dir is an infrastructure fault, not poison.

A worker checks the data dir's free space before it claims a shard (``StorageGuard.wait_ready``:
below ``GRIDSHIFT_MIN_FREE_DISK_MB`` it waits, then leaves the shard queued, unclaimed); an
``OSError`` from writing an attempt's outputs (or a storage ``errno`` anywhere in the attempt)
gives the shard back as a ``storage_fault`` attempt, which the poison-shard halving and the
attempt cap do not count, and the worker backs off (1 s doubling to
``GRIDSHIFT_STORAGE_BACKOFF_MAX_S``) before it claims again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from scheduler.config import Settings
from scheduler.store.disk import STORAGE_ERRNOS, free_disk_mb, is_storage_fault

__all__ = ["STORAGE_ERRNOS", "StorageGuard", "free_disk_mb", "is_storage_fault"]

log = logging.getLogger(__name__)


@dataclass
class StorageGuard:
    """One worker's view of its data dir: free space, consecutive faults, backoff.

    ``state`` is ``ok``, ``low_disk`` (free space under the threshold: no claims) or
    ``backoff`` (a storage fault happened; no claims until ``backoff_until``).
    """

    settings: Settings
    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    state: str = "ok"
    faults: int = 0  # consecutive storage faults (0 after an attempt that wrote its outputs)
    faults_total: int = 0
    deferrals_total: int = 0
    free_mb: float | None = None
    last_error: str | None = None
    backoff_until: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def check(self) -> bool:
        """Whether the worker may claim now (not backing off, enough free space)."""
        with self._lock:
            if self.monotonic() < self.backoff_until:
                self.state = "backoff"
                return False
            threshold = self.settings.min_free_disk_mb
            try:
                self.free_mb = free_disk_mb(self.settings.data_dir)
            except OSError as e:  # the data dir itself is unreadable
                self.free_mb, self.last_error = None, repr(e)
                self.state = "low_disk"
                return False
            if threshold > 0 and self.free_mb < threshold:
                if self.state != "low_disk":
                    log.warning(
                        "data dir %s has %.1f MiB free, under GRIDSHIFT_MIN_FREE_DISK_MB=%g: "
                        "claiming no shard until space returns",
                        self.settings.data_dir,
                        self.free_mb,
                        threshold,
                    )
                self.state = "low_disk"
                return False
            if self.state != "ok":
                log.info("data dir %s: %.1f MiB free again", self.settings.data_dir, self.free_mb)
            self.state = "ok"
            return True

    def wait_ready(self, max_wait_s: float) -> bool:
        """Wait up to ``max_wait_s`` for ``check`` to pass (polling each second); its answer."""
        deadline = self.monotonic() + max_wait_s
        while not self.check():
            left = deadline - self.monotonic()
            if left <= 0:
                with self._lock:
                    self.deferrals_total += 1
                return False
            self.sleep(min(1.0, left))
        return True

    def fault(self, error: BaseException) -> float:
        """Record a storage fault; the backoff it starts, s (doubling, capped)."""
        with self._lock:
            self.faults += 1
            self.faults_total += 1
            self.last_error = repr(error)
            wait = min(2.0 ** (self.faults - 1), self.settings.storage_backoff_max_s)
            self.backoff_until = self.monotonic() + wait
            self.state = "backoff"
        log.error("storage fault (%r): backing off %.0f s before claiming again", error, wait)
        return wait

    def wrote(self) -> None:
        """An attempt wrote its outputs: the storage works, consecutive faults reset."""
        with self._lock:
            self.faults = 0

    def snapshot(self) -> dict[str, object]:
        """The guard's state as a JSON-friendly dict (worker status, task results, logs)."""
        with self._lock:
            return {
                "state": self.state,
                "free_disk_mb": None if self.free_mb is None else round(self.free_mb, 1),
                "min_free_disk_mb": self.settings.min_free_disk_mb,
                "storage_faults": self.faults_total,
                "deferrals": self.deferrals_total,
                "last_error": self.last_error,
            }
