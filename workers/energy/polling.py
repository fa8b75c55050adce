"""A background thread that calls a meter's ``poll`` periodically during a window."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from scheduler.errors import EnergyMeterError


class PollingThread:
    """Calls ``poll`` every ``interval_s`` seconds in a daemon thread until stopped.

    A failing poll (``EnergyMeterError``) is logged as a warning on ``log`` with
    ``failure_message`` and polling goes on: the meter's ``end()`` polls once more and raises
    then, so the failure is never swallowed.
    """

    def __init__(
        self,
        poll: Callable[[], None],
        *,
        name: str,
        log: logging.Logger,
        failure_message: str,
    ) -> None:
        """Poll with ``poll`` in a thread called ``name``; warn with ``failure_message`` (%s)."""
        self._poll = poll
        self._name = name
        self._log = log
        self._failure_message = failure_message
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """True between ``start`` and ``stop``."""
        return self._thread is not None

    def start(self, interval_s: float) -> None:
        """Start polling every ``interval_s`` seconds (the first call after one interval)."""
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._loop, args=(interval_s,), name=self._name, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop polling and wait for the thread to end; a no-op when not running."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def _loop(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                self._poll()
            except EnergyMeterError as e:
                self._log.warning(self._failure_message, e)
