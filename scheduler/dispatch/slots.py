"""Kept for existing imports: slot arithmetic lives in ``scheduler.slots`` (a leaf module)."""

from scheduler.slots import slot_floor, slot_fraction_left, slots_between

__all__ = ["slot_floor", "slot_fraction_left", "slots_between"]
