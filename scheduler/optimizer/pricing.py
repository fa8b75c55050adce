"""The pricing rule for the planner: ``scheduler.pricing`` (the one module) plus
``price_problem``, which prices a ``PlanningProblem``'s assignments with its fixed loads.

Everything else is re-exported from ``scheduler.pricing`` so that existing imports keep working;
new code outside the optimizer imports ``scheduler.pricing`` (it loads no solver).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from scheduler.domain import Assignment
from scheduler.optimizer.problem import PlanningProblem
from scheduler.pricing import (
    MARKET_INSTRUMENTS,
    MARKET_INSTRUMENTS_LOCATION,
    MARKET_INSTRUMENTS_RESIDUAL,
    MARKET_LOCATION,
    MARKET_PARTIAL_FALLBACK,
    MARKET_RESIDUAL,
    ZERO,
    PieceEnergy,
    PricedPiece,
    SiteSlot,
    committed_grid_kwh,
    energy_from_tokens,
    market_basis,
    market_g_per_kwh,
    piece_energy,
    piece_gpu_hours,
    price_assignments,
    price_piece,
    renewables_left_kwh,
    reprice_at,
    reprice_grid,
    share_renewables,
    slot_renewable_kwh,
    sum_pieces,
)

__all__ = [
    "SiteSlot",
    "PieceEnergy",
    "PricedPiece",
    "ZERO",
    "piece_gpu_hours",
    "energy_from_tokens",
    "slot_renewable_kwh",
    "renewables_left_kwh",
    "share_renewables",
    "MARKET_INSTRUMENTS",
    "MARKET_INSTRUMENTS_RESIDUAL",
    "MARKET_INSTRUMENTS_LOCATION",
    "MARKET_RESIDUAL",
    "MARKET_LOCATION",
    "MARKET_PARTIAL_FALLBACK",
    "market_basis",
    "market_g_per_kwh",
    "price_piece",
    "reprice_grid",
    "reprice_at",
    "piece_energy",
    "price_assignments",
    "committed_grid_kwh",
    "sum_pieces",
    "price_problem",
]


def price_problem(problem: PlanningProblem, assignments: Iterable[Assignment]) -> list[PricedPiece]:
    """``price_assignments`` with the problem's signals and its fixed loads as committed load."""
    committed: dict[SiteSlot, float] = defaultdict(float)
    for f in problem.fixed:
        committed[(f.site, f.slot)] += f.facility_kwh
    return price_assignments(problem.fleet, problem.signals, assignments, committed)
