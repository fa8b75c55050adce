"""Per-batch figures (co2_g, cost, water_l, delay_h) of a plan or a baseline placement.

Each piece is priced by ``scheduler.optimizer.pricing`` (the one pricing rule: committed load
first, then the new pieces of a site-slot share its renewables in proportion to facility
energy), so the per-batch figures add up exactly to the plan-wide totals. A batch's delay is ``priority x`` the token-weighted
mean of ``(t_end - submitted_at)`` in hours over its pieces (the contract's ``delay_h`` term).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from scheduler.domain import Assignment
from scheduler.optimizer.baselines import baseline_assignments
from scheduler.optimizer.pricing import ZERO, PricedPiece, price_problem, sum_pieces
from scheduler.optimizer.problem import PlanningProblem


@dataclass(frozen=True, slots=True)
class BatchFigures:
    """One planning batch's share of a plan's totals.

    Attributes:
        co2_g: operational (share of grid) plus embodied CO2, grams.
        cost: grid energy cost, currency.
        water_l: on-site plus grid water, litres.
        delay_h: ``priority x`` token-weighted mean hours from submission to slot end.
        energy_kwh: facility energy, kWh.
    """

    co2_g: float = 0.0
    cost: float = 0.0
    water_l: float = 0.0
    delay_h: float = 0.0
    energy_kwh: float = 0.0

    def as_dict(self) -> dict[str, float]:
        """The figures as a JSON-ready dict."""
        return {
            "co2_g": self.co2_g,
            "cost": self.cost,
            "water_l": self.water_l,
            "delay_h": self.delay_h,
            "energy_kwh": self.energy_kwh,
        }


def price_by_batch(
    problem: PlanningProblem, assignments: Iterable[Assignment]
) -> dict[str, BatchFigures]:
    """Price assignments per planning batch (rules in the module docstring).

    Args:
        problem: the problem the assignments answer (signals, fixed loads, batches).
        assignments: pieces of a plan or of a baseline placement.

    Returns:
        ``{batch_id: BatchFigures}`` for every batch with at least one priced piece. Pieces
        naming an unknown site, pool or model, or a slot without a signal, count zero.
    """
    batches = {b.id: b for b in problem.batches}
    items = list(assignments)
    priced = price_problem(problem, items)
    acc: dict[str, list[PricedPiece]] = defaultdict(list)
    delay_num: dict[str, float] = defaultdict(float)
    delay_den: dict[str, float] = defaultdict(float)
    for a, p in zip(items, priced, strict=True):
        if p is ZERO:
            continue
        acc[a.batch].append(p)
        b = batches.get(a.batch)
        if b is not None:
            tokens = a.input_tokens + a.output_tokens
            end = a.slot + problem.slot_delta
            delay_num[a.batch] += tokens * ((end - b.submitted_at) / timedelta(hours=1))
            delay_den[a.batch] += tokens
    out = {}
    for bid, pieces in acc.items():
        delay = 0.0
        if delay_den[bid] > 0:
            delay = batches[bid].priority * delay_num[bid] / delay_den[bid]
        total = sum_pieces(pieces)
        out[bid] = BatchFigures(total.co2_g, total.cost, total.water_l, delay, total.facility_kwh)
    return out


def baseline_by_batch(problem: PlanningProblem, name: str) -> dict[str, BatchFigures]:
    """Per-batch figures of one baseline's placement (``asap`` or ``carbon_greedy``).

    Batches the baseline leaves unplaced have no entry.

    Raises:
        ValueError: an unknown baseline name.
    """
    assignments, _ = baseline_assignments(problem, name)
    return price_by_batch(problem, assignments)


def sum_figures(figures: Iterable[BatchFigures]) -> BatchFigures:
    """Add figures up (for the parts of one batch, or a whole plan)."""
    total = [0.0] * 5
    for f in figures:
        for i, v in enumerate((f.co2_g, f.cost, f.water_l, f.delay_h, f.energy_kwh)):
            total[i] += v
    return BatchFigures(*total)
