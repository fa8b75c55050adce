"""A Celery event receiver on the test's broker: what Flower (or ``celery events``) would see."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery import Celery


class EventLog:
    """Task events received from the broker, in arrival order (``type``, ``uuid``, the rest)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self._lock = threading.Lock()

    def add(self, event: dict[str, Any]) -> None:
        """Keep one event (the receiver's handler)."""
        with self._lock:
            self.events.append(dict(event))

    def of_task(self, uuid: str) -> list[str]:
        """The event types seen for task ``uuid``, in order."""
        with self._lock:
            return [e["type"] for e in self.events if e.get("uuid") == uuid]

    def by_type(self, kind: str) -> list[dict[str, Any]]:
        """Every event of type ``kind``."""
        with self._lock:
            return [e for e in self.events if e["type"] == kind]


@contextmanager
def receiving_events(broker_url: str) -> Iterator[EventLog]:
    """Receive every task event on ``broker_url`` in a thread while the block runs."""
    app = Celery("gridshift-test-events", broker=broker_url, set_as_current=False)
    log = EventLog()
    box: dict[str, Any] = {}

    def run() -> None:
        with app.connection() as conn:
            receiver = app.events.Receiver(conn, handlers={"*": log.add})
            box["receiver"] = receiver
            bound = receiver.on_consume_ready

            def on_ready(*args: Any, **kwargs: Any) -> None:
                bound(*args, **kwargs)
                log.ready.set()  # the event queue is bound: nothing sent from now is missed

            receiver.on_consume_ready = on_ready  # type: ignore[method-assign]
            receiver.capture(limit=None, timeout=None, wakeup=False)

    thread = threading.Thread(target=run, name="celery-events", daemon=True)
    thread.start()
    if not log.ready.wait(15):
        raise RuntimeError("the event receiver did not connect to the broker")
    try:
        yield log
    finally:
        box["receiver"].should_stop = True
        thread.join(5)
