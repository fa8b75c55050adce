"""What limited a batch, read from the binding LP rows a plan keeps (``plans.duals``).

The planner keeps the rows with a non-zero dual of the stage that decided placement
(``scheduler/optimizer/duals.py``): pool capacity per slot, a site's daily water cap, the
carbon budget. A batch is limited by such a row when one of its chosen cells or its next-best
option touches it: the capacity of the same site (and pool, when known) in the same slot, the
water cap of the same site on the same UTC day, or the budget (every cell counts against the
horizon's cap; a day's cap, ``start`` = that UTC day, only the cells of that day).
Deadline and residency have no rows (cells outside a window or the allowed sites are never
built), so they are never answered here; degenerate LPs have several dual solutions, so a row
named is *a* binding limit, and a tight row with a zero dual is not proven slack.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from scheduler.review.units import si

#: ``basis`` of an explanation whose "what limited it" comes from the plan's LP duals.
DUALS_BASIS = "lp-duals"
_KINDS = {"capacity": "capacity", "water": "water cap", "carbon_cap": "budget"}


def _start(row: dict[str, Any]) -> datetime | None:
    raw = row.get("start")
    return datetime.fromisoformat(raw).astimezone(UTC) if raw else None


def _touches(row: dict[str, Any], site: str, pool: str | None, slot: datetime) -> bool:
    kind, start = row.get("kind"), _start(row)
    if kind == "carbon_cap":
        return start is None or start.date() == slot.astimezone(UTC).date()
    if row.get("site") != site or start is None:
        return False
    if kind == "capacity":
        return start == slot and (pool is None or row.get("pool") == pool)
    return kind == "water" and start.date() == slot.astimezone(UTC).date()


def _words(row: dict[str, Any]) -> str:
    kind, start = row["kind"], _start(row)
    value, unit = float(row["shadow_price"]), str(row["unit"])
    price = "shadow price " + (si(value, unit) if unit.startswith("g ") else f"{value:.4g} {unit}")
    if kind == "capacity" and start is not None:
        return f"capacity of {row['site']}/{row['pool']} at {start:%a %H:%M} UTC was full: {price}"
    if kind == "water" and start is not None:
        return f"the water cap of {row['site']} on {start:%a %d %b} was reached: {price}"
    if kind == "carbon_cap" and start is not None:
        return f"the carbon budget of {start:%a %d %b} (its daily carbon cap) was reached: {price}"
    return f"the carbon budget (carbon cap) was reached: {price}"


def dual_reason(
    duals: Sequence[dict[str, Any]] | None,
    chosen: Sequence[tuple[str, str | None, datetime]],
    next_best: tuple[str, datetime] | None,
) -> tuple[str, str] | None:
    """``(limited_by, because)`` from the binding rows the batch's cells touch, else None.

    ``chosen`` are the batch's (site, pool, slot start) cells in the plan; ``next_best`` the
    (site, slot start) of the cleanest option it did not take. Capacity is named first, then
    water, then the budget; every touched row is listed in ``because``.
    """
    if not duals:
        return None
    cells: list[tuple[str, str | None, datetime]] = list(chosen)
    if next_best is not None:
        cells.append((next_best[0], None, next_best[1]))
    touched = [r for r in duals if any(_touches(r, *c) for c in cells)]
    if not touched or not chosen:
        return None
    order = list(_KINDS)
    touched.sort(key=lambda r: (order.index(r["kind"]), -float(r["shadow_price"])))
    because = "; ".join(_words(r) for r in touched[:3])
    if len(touched) > 3:
        because += f"; and {len(touched) - 3} more binding rows"
    because += (
        f" (a binding constraint of the LP's {touched[0]['objective']} stage, from its duals; "
        "a degenerate LP may have others)"
    )
    return _KINDS[touched[0]["kind"]], because
