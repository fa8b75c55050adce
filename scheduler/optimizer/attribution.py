"""Per-batch figures (co2_g, cost, water_l, delay_h) of a plan or a baseline placement.

Pricing follows planning-formats.md section 4, as ``validate.price`` does, and splits each
(site, slot)'s grid energy over the pieces there in proportion to their facility energy:

    own_grid(s,t)   = max(0, F_fixed + F_plan - R h) - max(0, F_fixed - R h)
    grid(piece)     = own_grid(s,t) * facility(piece) / F_plan(s,t)

so each piece's operational CO2, cost and grid water are its share of the site-slot totals and
the per-batch figures add up exactly to the plan-wide totals. Embodied CO2 and on-site water
(``it_kwh * wue``) are per piece already. A batch's delay is ``priority x`` the token-weighted
mean of ``(t_end - submitted_at)`` in hours over its pieces (the contract's ``delay_h`` term).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from scheduler.domain import Assignment
from scheduler.optimizer.baselines import baseline_assignments
from scheduler.optimizer.problem import PlanningProblem
from scheduler.optimizer.validate import piece_gpu_hours


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
    fleet, h = problem.fleet, problem.fleet.slot_hours
    sites = {s.name: s for s in fleet.sites}
    models = {m.name: m for m in fleet.models}
    batches = {b.id: b for b in problem.batches}
    pieces: list[tuple[Assignment, float, float, float]] = []  # (a, gpu_h, it_kwh, facility)
    facility: dict[tuple[str, datetime], float] = defaultdict(float)
    for a in assignments:
        site, model = sites.get(a.site), models.get(a.model)
        pool = next((p for p in site.pools if p.name == a.pool), None) if site else None
        profile = model.profiles.get(pool.gpu) if model and pool else None
        if site is None or pool is None or profile is None:
            continue
        g = piece_gpu_hours(profile, a.input_tokens, a.output_tokens)
        it_kwh = g * profile.power_w / 1000.0
        pieces.append((a, g, it_kwh, it_kwh * site.pue))
        facility[(a.site, a.slot)] += it_kwh * site.pue
    fixed: dict[tuple[str, datetime], float] = defaultdict(float)
    for f in problem.fixed:
        fixed[(f.site, f.slot)] += f.facility_kwh
    own_grid: dict[tuple[str, datetime], float] = {}
    for key, fac in facility.items():
        sig = problem.signals.get(key)
        renewable_kwh = sig.renewable_kw * h if sig is not None else 0.0
        own_grid[key] = max(0.0, fixed[key] + fac - renewable_kwh) - max(
            0.0, fixed[key] - renewable_kwh
        )
    acc: dict[str, list[float]] = defaultdict(lambda: [0.0] * 5)
    delay_num: dict[str, float] = defaultdict(float)
    delay_den: dict[str, float] = defaultdict(float)
    for a, g, it_kwh, fac in pieces:
        key = (a.site, a.slot)
        sig = problem.signals.get(key)
        if sig is None:
            continue
        site = sites[a.site]
        grid = own_grid[key] * fac / facility[key] if facility[key] > 0 else 0.0
        wue = sig.wue_l_per_kwh if sig.wue_l_per_kwh is not None else site.wue_l_per_kwh
        row = acc[a.batch]
        row[0] += grid * sig.carbon_g_per_kwh + g * site.pool(a.pool).embodied_g_per_gpu_hour
        row[1] += grid * sig.price_per_kwh
        row[2] += it_kwh * wue + grid * site.ewif_l_per_kwh
        row[4] += fac
        tokens = a.input_tokens + a.output_tokens
        b = batches.get(a.batch)
        if b is not None:
            end = a.slot + problem.slot_delta
            delay_num[a.batch] += tokens * ((end - b.submitted_at) / timedelta(hours=1))
            delay_den[a.batch] += tokens
    out = {}
    for bid, (co2, cost, water, _, energy) in acc.items():
        delay = 0.0
        if delay_den[bid] > 0:
            delay = batches[bid].priority * delay_num[bid] / delay_den[bid]
        out[bid] = BatchFigures(co2, cost, water, delay, energy)
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
