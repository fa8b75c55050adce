"""Pinning gridshift's clock in tests (see docs/execution.md, "Clock").

Tests pin the clock through ``GRIDSHIFT_CLOCK`` anchored at the real time of the pin
(``scheduler.clock.clock_setting``): this process reads it, and every process the test spawns
(API, dispatcher, workers, Celery) inherits it through the environment and computes the same
now. Times in tests derive from the pinned instant, never from ``datetime.now()``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest

from scheduler import clock

#: The instant tests pin the clock to unless they choose another (mid-hour, mid-day UTC), so
#: that no outcome depends on the hour the suite runs at.
PINNED_AT = datetime(2026, 3, 2, 12, 30, tzinfo=UTC)


def pin(monkeypatch: pytest.MonkeyPatch, at: datetime) -> datetime:
    """Pin the clock at ``at`` (ticking in real time from now) until ``monkeypatch`` undoes."""
    monkeypatch.setenv(clock.SETTING, clock.clock_setting(at))
    return at


@contextmanager
def pinned_clock(at: datetime = PINNED_AT) -> Iterator[datetime]:
    """The clock pinned at ``at`` inside the block (for module-scoped fixtures)."""
    with pytest.MonkeyPatch.context() as mp:
        yield pin(mp, at)
