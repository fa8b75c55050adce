"""The two naive baselines of the contract, ``asap`` and ``carbon_greedy``, placed and priced.

Both take batches in order of ``submitted_at`` (ties by ``id``), place whole requests, respect
fit, capacity, windows and residency, ignore water and grid caps (and count the caps they break),
and list a batch as unplaced, removing its pieces, when it does not fit completely.

- ``asap``: the largest allowed model (highest quality), slots in time order, and within a slot
  the sites and pools in ``fleet.yaml`` order.
- ``carbon_greedy``: the smallest allowed model (lowest quality that qualifies); the options
  (site, pool, slot) ranked by ``facility_kwh x carbon_g_per_kwh + embodied_g`` of the WHOLE
  batch on that option (renewables ignored), cheapest first; ties keep the ``asap`` order.

Filling: on each option in turn a batch takes as many whole requests as the pool's remaining
GPU-hours hold, ``floor(remaining / gpu_hours_per_request)``, until all its requests are placed.
A model counts as allowed only if it fits at least one pool of the batch's sites. Caps broken =
the number of (site, UTC day) water caps plus (site, slot) grid caps exceeded by the placement.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime

from scheduler.domain import Assignment, BaselineTotals, ModelSpec, PlanningBatch, Pool, Site
from scheduler.optimizer.problem import PlanningProblem
from scheduler.optimizer.validate import (
    allowed_models,
    allowed_sites,
    caps_broken,
    fits,
    in_window,
    price,
    slot_capacity_gpu_hours,
)
from scheduler.pricing import (
    embodied_g,
    energy_from_gpu_hours,
    energy_from_tokens,
    grid_co2_g,
    piece_gpu_hours,
)

BASELINES = ("asap", "carbon_greedy")
_Option = tuple[Site, Pool, datetime]


def compute_baselines(problem: PlanningProblem) -> dict[str, BaselineTotals]:
    """Place and price both baselines of the contract.

    Returns:
        ``{"asap": ..., "carbon_greedy": ...}`` with ``co2_g`` (g), ``cost`` (currency),
        ``water_l`` (L), ``delay_h`` (priority-weighted hours), ``unplaced`` (batches) and
        ``caps_broken`` (water caps per site-day plus grid caps per site-slot exceeded).
    """
    return {name: baseline_totals(problem, name) for name in BASELINES}


def baseline_totals(problem: PlanningProblem, name: str) -> BaselineTotals:
    """Place and price one baseline (``asap`` or ``carbon_greedy``).

    Raises:
        ValueError: an unknown baseline name.
    """
    assignments, unplaced = baseline_assignments(problem, name)
    pricing = price(problem, assignments)
    t = pricing.totals
    return BaselineTotals(
        co2_g=t.co2_g,
        cost=t.cost,
        water_l=t.water_l,
        delay_h=t.delay_h,
        unplaced=len(unplaced),
        caps_broken=len(caps_broken(problem, pricing)),
    )


def baseline_assignments(problem: PlanningProblem, name: str) -> tuple[list[Assignment], list[str]]:
    """Placements of one baseline: its assignments and the ids of the batches it left unplaced.

    Raises:
        ValueError: an unknown baseline name.
    """
    if name == "asap":
        choose, rank = _largest, _time_order
    elif name == "carbon_greedy":
        choose, rank = _smallest, _carbon_order
    else:
        raise ValueError(f"unknown baseline {name!r}; use one of {', '.join(BASELINES)}")
    remaining: dict[tuple[str, str, datetime], float] = defaultdict(float)
    for site in problem.fleet.sites:
        for pool in site.pools:
            for slot in problem.slots:
                remaining[(site.name, pool.name, slot)] = slot_capacity_gpu_hours(
                    problem, pool, slot
                )
    for f in problem.fixed:
        remaining[(f.site, f.pool, f.slot)] -= f.gpu_hours
    out: list[Assignment] = []
    unplaced: list[str] = []
    for batch in sorted(problem.batches, key=lambda b: (b.submitted_at, b.id)):
        model = choose(problem, batch)
        pieces = _place(problem, batch, model, rank, remaining) if model else None
        if pieces is None:
            unplaced.append(batch.id)
        else:
            out += pieces
    return out, unplaced


def _candidates(problem: PlanningProblem, batch: PlanningBatch) -> list[ModelSpec]:
    sites = allowed_sites(problem, batch)
    return [
        m for m in allowed_models(problem, batch) if any(fits(m, p) for s in sites for p in s.pools)
    ]


def _largest(problem: PlanningProblem, batch: PlanningBatch) -> ModelSpec | None:
    models = _candidates(problem, batch)
    return max(models, key=lambda m: m.quality) if models else None


def _smallest(problem: PlanningProblem, batch: PlanningBatch) -> ModelSpec | None:
    models = _candidates(problem, batch)
    return min(models, key=lambda m: m.quality) if models else None


def _options(problem: PlanningProblem, batch: PlanningBatch, model: ModelSpec) -> list[_Option]:
    sites = allowed_sites(problem, batch)
    return [
        (site, pool, slot)
        for slot in problem.slots
        if in_window(problem, batch, slot)
        for site in sites
        for pool in site.pools
        if fits(model, pool)
    ]


def _time_order(
    problem: PlanningProblem, batch: PlanningBatch, model: ModelSpec, options: list[_Option]
) -> list[_Option]:
    return options


def _carbon_order(
    problem: PlanningProblem, batch: PlanningBatch, model: ModelSpec, options: list[_Option]
) -> list[_Option]:
    def score(option: _Option) -> float:
        site, pool, slot = option
        e = energy_from_tokens(
            model.profiles[pool.gpu], site.pue, batch.input_tokens, batch.output_tokens
        )
        carbon = problem.signals[(site.name, slot)].carbon_g_per_kwh
        return grid_co2_g(e.facility_kwh, carbon) + embodied_g(pool, e.gpu_hours)

    return sorted(options, key=score)  # stable: ties keep time, site, pool order


def _place(
    problem: PlanningProblem,
    batch: PlanningBatch,
    model: ModelSpec,
    rank: Callable[[PlanningProblem, PlanningBatch, ModelSpec, list[_Option]], list[_Option]],
    remaining: dict[tuple[str, str, datetime], float],
) -> list[Assignment] | None:
    """Fill options in rank order with whole requests; None (capacity untouched) if incomplete."""
    per_in = batch.input_tokens / batch.requests
    per_out = batch.output_tokens / batch.requests
    left = batch.requests
    taken: list[tuple[_Option, int, float]] = []
    for option in rank(problem, batch, model, _options(problem, batch, model)):
        site, pool, slot = option
        profile = model.profiles[pool.gpu]
        per_request = piece_gpu_hours(profile, per_in, per_out)
        free = remaining[(site.name, pool.name, slot)]
        n = left if per_request <= 0 else min(left, math.floor(free / per_request + 1e-9))
        if n <= 0:
            continue
        taken.append((option, n, per_request))
        left -= n
        if left == 0:
            break
    if left > 0:
        return None
    pieces = []
    for (site, pool, slot), n, per_request in taken:
        remaining[(site.name, pool.name, slot)] -= n * per_request
        profile = model.profiles[pool.gpu]
        energy = energy_from_gpu_hours(profile, site.pue, n * per_request)  # per request x n
        pieces.append(
            Assignment(
                batch=batch.id,
                site=site.name,
                pool=pool.name,
                model=model.name,
                slot=slot,
                requests=n,
                input_tokens=batch.input_tokens * n / batch.requests,
                output_tokens=batch.output_tokens * n / batch.requests,
                gpu_hours=energy.gpu_hours,
                energy_kwh=energy.facility_kwh,
            )
        )
    return pieces
