"""Ledger rows counted by provenance: synthetic signals, fallbacks by kind, lifecycle figures
(apart from scope 2) and price fallbacks (docs/review.md, "Provenance")."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from scheduler.store.tables import LedgerEntry


def provenance_counts(rows: Sequence[LedgerEntry]) -> dict[str, Any]:
    """Rows by provenance: synthetic, each fallback kind, lifecycle (apart from scope 2) and
    price fallbacks (``EmissionsTotals``' fields of those names)."""
    life = [r for r in rows if r.co2_lifecycle_g is not None]
    kinds: dict[str, int] = {}
    for r in rows:
        if r.signal_fallback:
            kinds[r.signal_fallback] = kinds.get(r.signal_fallback, 0) + 1
    return {
        "synthetic_rows": sum(1 for r in rows if r.signal_synthetic),
        "signal_fallbacks": dict(sorted(kinds.items())),
        "lifecycle_rows": len(life),
        "lifecycle_co2_g": math.fsum(r.co2_lifecycle_g or 0.0 for r in life),
        "upstream_co2_g": math.fsum(
            max(0.0, (r.co2_lifecycle_g or 0.0) - r.co2_location_g) for r in life
        ),
        "price_fallback_rows": sum(1 for r in rows if r.price_fallback),
    }
