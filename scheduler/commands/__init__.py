"""Command modules mounted by ``scheduler.cli`` (one per area)."""
