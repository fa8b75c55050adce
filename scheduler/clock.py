"""gridshift's clock: the one place product code reads the current time.

Every wall-clock read of the product (planning slots, deadlines, leases, retention cut-offs,
budgets, review windows, OpenAI ``created_at`` stamps) goes through ``now_utc`` / ``now_s``.
Three things can set that clock, the first that applies wins:

1. ``use_clock(fn)``: a block of in-process code (tests, ``gridshift demo``'s replayed night)
   reads ``fn()``; ``pinned(at)`` makes a clock that starts at ``at`` and ticks in real time.
2. The environment variable ``GRIDSHIFT_CLOCK`` (``SETTING``), honoured by every process that
   imports gridshift (API, dispatcher / planner, workers, Celery), so a test can pin the clock
   of the processes it spawns. Its value is ``<ISO-8601 instant>[@<Unix seconds>]``:

   - ``2026-03-02T22:59:45Z@1772491185.25``: the clock read ``2026-03-02T22:59:45Z`` when the
     real Unix time was ``1772491185.25`` and ticks in real time from there. Every process given
     the same value computes the same fake now, whenever it started (use ``clock_setting``).
   - ``2026-03-02T22:59:45Z``: the clock starts at that instant the first time the process reads
     it, then ticks in real time (each process has its own start: prefer the anchored form
     when several processes must agree).

   A value that does not parse raises ``ClockSettingError`` saying what is expected.
3. Otherwise the real clock, ``datetime.now(UTC)``.

Elapsed durations (solver time limits, heartbeat periods, rate-limit windows, token lifetimes)
use ``monotonic`` (real, never faked by this seam): a pinned clock ticks in real time anyway,
and a replayed night must not make a solver stop early. Ages of files on disk are measured with
``filesystem_time`` (the clock that stamps their modification times).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import lru_cache

#: Environment variable that pins the clock of a process (see the module docstring).
SETTING = "GRIDSHIFT_CLOCK"

_override: Callable[[], datetime] | None = None


class ClockSettingError(ValueError):
    """``GRIDSHIFT_CLOCK`` holds a value that is not ``<ISO-8601 instant>[@<Unix seconds>]``."""


def now_utc() -> datetime:
    """The current time, timezone-aware UTC, as the product sees it."""
    if _override is not None:
        return _override()
    setting = os.environ.get(SETTING)
    if setting:
        fake, real = _anchor(setting)
        return fake + timedelta(seconds=time.time() - real)
    return datetime.now(UTC)


def now_s() -> int:
    """The current Unix time in whole seconds (OpenAI timestamps), from ``now_utc``."""
    return int(now_utc().timestamp())


def monotonic() -> float:
    """Real elapsed-time clock (``time.monotonic``): durations, never instants."""
    return time.monotonic()


def filesystem_time() -> float:
    """Real Unix time, the clock file modification times are stamped with.

    Ages of files on disk (upload leftovers, crash ``.tmp`` files) are measured against it, not
    against ``now_utc``: a pinned or replayed product clock must neither keep a stale file
    forever nor remove an upload that is still being written.
    """
    return time.time()


def pinned(at: datetime) -> Callable[[], datetime]:
    """A clock that reads ``at`` now and ticks in real time from there."""
    _require_aware(at)
    base, t0 = at.astimezone(UTC), time.monotonic()
    return lambda: base + timedelta(seconds=time.monotonic() - t0)


def frozen(at: datetime) -> Callable[[], datetime]:
    """A clock that always reads ``at`` (for tests that step time themselves)."""
    _require_aware(at)
    fixed = at.astimezone(UTC)
    return lambda: fixed


@contextmanager
def use_clock(clock: Callable[[], datetime]) -> Iterator[None]:
    """Make ``now_utc`` read ``clock`` inside the block (process-wide, all threads)."""
    global _override
    previous, _override = _override, clock
    try:
        yield
    finally:
        _override = previous


def clock_setting(at: datetime, real_epoch: float | None = None) -> str:
    """The ``GRIDSHIFT_CLOCK`` value under which processes read ``at`` at ``real_epoch``.

    ``real_epoch`` defaults to the real Unix time now, so processes spawned with the value
    agree with an in-process ``pinned(at)`` made at the same moment.
    """
    _require_aware(at)
    real = time.time() if real_epoch is None else real_epoch
    return f"{at.astimezone(UTC).isoformat().replace('+00:00', 'Z')}@{real:.6f}"


def parse_setting(value: str) -> tuple[datetime, float | None]:
    """``(instant, real epoch or None)`` of a ``GRIDSHIFT_CLOCK`` value, or a clear error."""
    text, sep, epoch = value.strip().partition("@")
    hint = (
        f"{SETTING}={value!r} is not <ISO-8601 instant>[@<Unix seconds>], e.g. "
        f"2026-03-02T22:59:45Z@1772491185; unset it to use the real clock"
    )
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
        real = float(epoch) if sep else None
    except ValueError as exc:
        raise ClockSettingError(hint) from exc
    if at.tzinfo is None:
        raise ClockSettingError(f"{hint} (the instant needs a UTC offset such as Z)")
    return at.astimezone(UTC), real


@lru_cache(maxsize=8)
def _anchor(value: str) -> tuple[datetime, float]:
    at, real = parse_setting(value)
    return at, time.time() if real is None else real


def _require_aware(at: datetime) -> None:
    if at.tzinfo is None:
        raise ValueError(f"naive datetime {at!r}: the clock takes only aware UTC times")
