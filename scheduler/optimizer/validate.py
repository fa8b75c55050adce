"""Independent re-pricing and feasibility check of a plan, in plain Python (contract section 4).

Nothing here imports the optimizer's model (the LP): a checker that shares the solver's
arithmetic would share its bugs. Pieces are priced by ``scheduler.optimizer.pricing``, the one
pricing rule that the ledger and the reports also use, from their tokens. Used by tests on every solver output, by the baselines (to price
their placements) and by ``gridshift plan --check``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from scheduler.domain import (
    Assignment,
    ModelSpec,
    Plan,
    PlanningBatch,
    PlanTotals,
    Pool,
    Site,
)
from scheduler.optimizer.pricing import (
    committed_grid_kwh,
    piece_energy,
    price_assignments,
    sum_pieces,
)
from scheduler.optimizer.problem import PlanningProblem
from scheduler.pricing import committed_water_l

TOTALS_REL_TOL = 0.002  # totals within 0.2 % (contract section 5)
CAP_REL_TOL = 1e-4  # capacity and caps within 0.01 %
_ABS_EPS = 1e-6


@dataclass(frozen=True, slots=True)
class Pricing:
    """A set of assignments priced by the contract's rules, with the sums the caps need.

    Attributes:
        totals: the plan's totals (``delay_h`` included).
        gpu_hours: ``gpu_hours[(site, pool, slot)]`` of the priced assignments.
        grid_kwh: ``grid_kwh[(site, slot)]`` including fixed load.
        water_l: ``water_l[(site, utc_day)]`` including fixed load.
        piece_gpu_hours: recomputed GPU-hours of each assignment, in input order.
        piece_energy_kwh: recomputed facility energy of each assignment, in input order.
    """

    totals: PlanTotals
    gpu_hours: Mapping[tuple[str, str, datetime], float]
    grid_kwh: Mapping[tuple[str, datetime], float]
    water_l: Mapping[tuple[str, date], float]
    piece_gpu_hours: tuple[float, ...]
    piece_energy_kwh: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class ValidationReport:
    """Outcome of ``validate_plan``: every violation found and the recomputed totals."""

    violations: list[str]
    totals: PlanTotals
    caps_broken: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the plan breaks no constraint and its totals match the re-pricing."""
        return not self.violations


def allowed_models(problem: PlanningProblem, batch: PlanningBatch) -> list[ModelSpec]:
    """Models that may serve ``batch``: its named model, or every model with quality >= floor,
    and only those whose context holds its largest request (``max_request_tokens``)."""
    need = batch.max_request_tokens
    if batch.model is not None:
        return [m for m in problem.fleet.models if m.name == batch.model and m.holds(need)]
    floor = batch.min_quality if batch.min_quality is not None else -math.inf
    return [
        m
        for m in problem.fleet.models
        if m.quality >= floor - 1e-12 and not m.embeds and m.holds(need)
    ]


def allowed_sites(problem: PlanningProblem, batch: PlanningBatch) -> list[Site]:
    """Sites of the fleet (in file order) where ``batch`` may run (data residency)."""
    if batch.sites is None:
        return list(problem.fleet.sites)
    return [s for s in problem.fleet.sites if s.name in batch.sites]


def fits(model: ModelSpec, pool: Pool) -> bool:
    """Whether ``model`` may use ``pool``: a profile for its GPU and enough GPUs in the pool."""
    profile = model.profiles.get(pool.gpu)
    return profile is not None and pool.count >= profile.gpus


def slot_capacity_gpu_hours(problem: PlanningProblem, pool: Pool, slot: datetime) -> float:
    """GPU-hours a pool offers in a slot (``count * slot_hours`` times the slot's availability)."""
    return pool.count * problem.fleet.slot_hours * problem.slot_available.get(slot, 1.0)


def in_window(problem: PlanningProblem, batch: PlanningBatch, slot: datetime) -> bool:
    """Window rule: ``t_start >= submitted_at`` and ``t_end <= deadline``.

    A slot listed in ``slot_available`` (the slot in progress, for the service) may start before
    ``submitted_at`` as long as it ends after it.
    """
    end = slot + problem.slot_delta
    if end > batch.deadline:
        return False
    if slot in problem.slot_available:
        return end > batch.submitted_at
    return slot >= batch.submitted_at


def price(problem: PlanningProblem, assignments: Iterable[Assignment]) -> Pricing:
    """Price assignments by planning-formats.md section 4 (renewables first, grid = the rest).

    Each piece is priced by ``scheduler.optimizer.pricing`` (the one pricing rule) from its
    tokens; fixed load counts towards capacity, grid draw and water, but the totals are the
    plan's own share: ``grid_plan = max(0, F_fixed + F_plan - R h) - max(0, F_fixed - R h)`` per
    site and slot. Assignments naming an unknown site, pool, model, slot or a pool the model
    does not fit are priced as zero (``validate_plan`` reports them).
    """
    fleet, h = problem.fleet, problem.fleet.slot_hours
    sites = {s.name: s for s in fleet.sites}
    batches = {b.id: b for b in problem.batches}
    items = list(assignments)
    fixed_facility: dict[tuple[str, datetime], float] = defaultdict(float)
    gpu_h: dict[tuple[str, str, datetime], float] = defaultdict(float)
    for f in problem.fixed:
        gpu_h[(f.site, f.pool, f.slot)] += f.gpu_hours
        fixed_facility[(f.site, f.slot)] += f.facility_kwh
    priced = price_assignments(fleet, problem.signals, items, fixed_facility)
    pieces_g: list[float] = []
    pieces_e: list[float] = []
    grid: dict[tuple[str, datetime], float] = defaultdict(float)
    water_day: dict[tuple[str, date], float] = defaultdict(float)
    delay_num: dict[str, float] = defaultdict(float)
    delay_den: dict[str, float] = defaultdict(float)
    for a, p in zip(items, priced, strict=True):
        energy = piece_energy(fleet, a)
        pieces_g.append(energy.gpu_hours if energy else 0.0)
        pieces_e.append(energy.facility_kwh if energy else 0.0)
        if energy is None:
            continue
        gpu_h[(a.site, a.pool, a.slot)] += energy.gpu_hours
        if (a.site, a.slot) in problem.signals:
            grid[(a.site, a.slot)] += p.grid_kwh
            water_day[(a.site, a.slot.date())] += p.water_l
        b = batches.get(a.batch)
        if b is not None:
            tokens = a.input_tokens + a.output_tokens
            end = a.slot + problem.slot_delta
            delay_num[b.id] += tokens * ((end - b.submitted_at) / timedelta(hours=1))
            delay_den[b.id] += tokens
    for key, fixed_kwh in fixed_facility.items():
        site_name, slot = key
        signal, site = problem.signals.get(key), sites.get(site_name)
        if signal is None or site is None:
            continue
        fixed_grid = committed_grid_kwh(signal, h, fixed_kwh)
        wue = signal.wue_l_per_kwh if signal.wue_l_per_kwh is not None else site.wue_l_per_kwh
        grid[key] += fixed_grid
        water_day[(site_name, slot.date())] += committed_water_l(site, wue, fixed_kwh, fixed_grid)
    total = sum_pieces(priced)
    delay = sum(
        batches[b].priority * delay_num[b] / delay_den[b] for b in delay_num if delay_den[b] > 0
    )
    totals = PlanTotals(
        co2_g=total.co2_g,
        operational_co2_g=total.co2_location_g,
        embodied_co2_g=total.embodied_co2_g,
        cost=total.cost,
        water_l=total.water_l,
        energy_kwh=sum(pieces_e),
        grid_kwh=total.grid_kwh,
        delay_h=delay,
    )
    return Pricing(
        totals, dict(gpu_h), dict(grid), dict(water_day), tuple(pieces_g), tuple(pieces_e)
    )


def caps_broken(problem: PlanningProblem, pricing: Pricing) -> list[str]:
    """Water caps (per site and UTC day) and grid caps (per site and slot) that are exceeded."""
    out: list[str] = []
    sites = {s.name: s for s in problem.fleet.sites}
    for (site_name, day), water_l in sorted(pricing.water_l.items()):
        cap = sites[site_name].water_cap_l_per_day
        if cap is not None and water_l > cap * (1 + CAP_REL_TOL) + _ABS_EPS:
            out.append(f"water cap of {site_name} on {day}: {water_l:.3f} L > {cap:.3f} L")
    for (site_name, slot), grid_kwh in sorted(pricing.grid_kwh.items()):
        cap_kw = sites[site_name].grid_cap_kw
        if cap_kw is None:
            continue
        limit = cap_kw * problem.fleet.slot_hours
        if grid_kwh > limit * (1 + CAP_REL_TOL) + _ABS_EPS:
            out.append(
                f"grid cap of {site_name} at {slot.isoformat()}: {grid_kwh:.4f} kWh > {limit:.4f} kWh"
            )
    return out


def _close(reported: float, recomputed: float, rel: float) -> bool:
    return abs(reported - recomputed) <= rel * max(abs(reported), abs(recomputed)) + _ABS_EPS


@dataclass(frozen=True, slots=True)
class _Index:
    batches: Mapping[str, PlanningBatch]
    sites: Mapping[str, Site]
    pools: Mapping[tuple[str, str], Pool]
    models: Mapping[str, ModelSpec]
    allowed: Mapping[str, frozenset[str]]

    @classmethod
    def of(cls, problem: PlanningProblem) -> _Index:
        fleet = problem.fleet
        return cls(
            batches={b.id: b for b in problem.batches},
            sites={s.name: s for s in fleet.sites},
            pools={(s.name, p.name): p for s in fleet.sites for p in s.pools},
            models={m.name: m for m in fleet.models},
            allowed={
                b.id: frozenset(m.name for m in allowed_models(problem, b)) for b in problem.batches
            },
        )


def _check_assignment(
    problem: PlanningProblem, index: _Index, a: Assignment, out: list[str]
) -> None:
    batch = index.batches.get(a.batch)
    where = f"assignment of {a.batch} at {a.site}/{a.pool}/{a.model} {a.slot.isoformat()}"
    site = index.sites.get(a.site)
    pool = index.pools.get((a.site, a.pool))
    model = index.models.get(a.model)
    if batch is None or site is None or pool is None or model is None:
        out.append(f"{where}: unknown batch, site, pool or model")
        return
    if not fits(model, pool):
        out.append(
            f"{where}: fit: {a.model} cannot run on pool {a.pool} ({pool.gpu} x{pool.count})"
        )
    if (a.site, a.slot) not in problem.signals:
        out.append(f"{where}: slot is outside the horizon")
    if not in_window(problem, batch, a.slot):
        out.append(
            f"{where}: window: slot outside [{batch.submitted_at.isoformat()}, "
            f"{batch.deadline.isoformat()}]"
        )
    if batch.sites is not None and a.site not in batch.sites:
        out.append(f"{where}: residency: {a.site} is not among {list(batch.sites)}")
    if model.name not in index.allowed[batch.id]:
        out.append(f"{where}: model choice: {a.model} may not serve {batch.id}")
    if a.requests != int(a.requests) or a.requests < 1:
        out.append(f"{where}: requests must be a whole number >= 1, got {a.requests}")
    share = a.requests / batch.requests
    for name, got, total in (
        ("input_tokens", a.input_tokens, batch.input_tokens),
        ("output_tokens", a.output_tokens, batch.output_tokens),
    ):
        if abs(got - total * share) > total / batch.requests + 1e-6:
            out.append(f"{where}: {name} {got} is not proportional ({total * share:.1f} expected)")


def validate_plan(problem: PlanningProblem, plan: Plan) -> ValidationReport:
    """Re-price ``plan`` and check every constraint of the contract against ``problem``.

    Checks fit, capacity (0.01 %), windows, residency, model choice, whole requests,
    completeness (each batch fully placed or unplaced, never both), water and grid caps
    (0.01 %), proportional tokens (one request's share), each assignment's ``gpu_hours`` and
    ``energy_kwh`` and the plan's totals (0.2 %).

    Returns:
        A report with every violation as a readable sentence and the recomputed totals.
    """
    out: list[str] = []
    index = _Index.of(problem)
    for a in plan.assignments:
        _check_assignment(problem, index, a, out)
    placed: dict[str, int] = defaultdict(int)
    for a in plan.assignments:
        placed[a.batch] += int(a.requests)
    unplaced_list = [u.batch for u in plan.unplaced]
    unplaced = set(unplaced_list)
    for b in problem.batches:
        n = placed.get(b.id, 0)
        if b.id in unplaced and n:
            out.append(f"completeness: {b.id} is listed as unplaced but has {n} requests placed")
        elif b.id not in unplaced and n != b.requests:
            out.append(f"completeness: {b.id} has {n} of {b.requests} requests placed")
    known = {b.id for b in problem.batches}
    out += [
        f"completeness: unplaced {u} is not a batch of the problem"
        for u in unplaced
        if u not in known
    ]
    if len(unplaced) != len(unplaced_list):
        out.append("completeness: a batch is listed twice in unplaced")
    pricing = price(problem, plan.assignments)
    for a, g, e in zip(
        plan.assignments, pricing.piece_gpu_hours, pricing.piece_energy_kwh, strict=True
    ):
        if not _close(a.gpu_hours, g, TOTALS_REL_TOL) or not _close(
            a.energy_kwh, e, TOTALS_REL_TOL
        ):
            out.append(
                f"assignment of {a.batch} at {a.site}/{a.pool} {a.slot.isoformat()}: reports "
                f"{a.gpu_hours:.6g} GPU-h / {a.energy_kwh:.6g} kWh, re-priced {g:.6g} / {e:.6g}"
            )
    for (site, pool_name, slot), used in sorted(pricing.gpu_hours.items()):
        pool = index.pools.get((site, pool_name))
        if pool is None:
            continue
        cap = slot_capacity_gpu_hours(problem, pool, slot)
        if used > cap * (1 + CAP_REL_TOL) + _ABS_EPS:
            out.append(
                f"capacity of {site}/{pool_name} at {slot.isoformat()}: {used:.4f} > {cap:.4f} GPU-h"
            )
    broken = caps_broken(problem, pricing)
    out += broken
    for key in PlanTotals.__slots__:
        got, want = getattr(plan.totals, key), getattr(pricing.totals, key)
        if not _close(got, want, TOTALS_REL_TOL):
            out.append(f"totals: {key} is {got:.6g}, re-priced {want:.6g} (> 0.2 % apart)")
    return ValidationReport(violations=out, totals=pricing.totals, caps_broken=len(broken))
