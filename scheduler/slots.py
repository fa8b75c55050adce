"""Slot arithmetic for intake, dispatch, re-planning and execution (slots aligned to midnight UTC).

A leaf module (no scheduler imports), so every package can use it without an import cycle.
"""

from __future__ import annotations

from datetime import datetime, timedelta


def slot_floor(t: datetime, slot_minutes: int) -> datetime:
    """Start of the slot containing ``t`` (an aware UTC datetime)."""
    midnight = t.replace(hour=0, minute=0, second=0, microsecond=0)
    minutes = int((t - midnight).total_seconds() // 60)
    return midnight + timedelta(minutes=minutes - minutes % slot_minutes)


def slots_between(start: datetime, end: datetime, slot_minutes: int) -> tuple[datetime, ...]:
    """Slot starts from the slot containing ``start`` up to (excluding) ``end``."""
    step = timedelta(minutes=slot_minutes)
    t = slot_floor(start, slot_minutes)
    out = []
    while t < end:
        out.append(t)
        t += step
    return tuple(out)


def slot_fraction_left(now: datetime, slot_minutes: int) -> float:
    """Fraction (0..1] of the slot in progress that is still ahead of ``now``."""
    start = slot_floor(now, slot_minutes)
    used_s = (now - start).total_seconds()
    return max(1e-6, 1.0 - used_s / (slot_minutes * 60.0))
