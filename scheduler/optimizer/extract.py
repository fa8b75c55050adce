"""Read an LP solution back as whole-request assignments, repair rounding, price the totals."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from scheduler.domain import Assignment, PlanningBatch, PlanTotals
from scheduler.optimizer.aggregate import Option
from scheduler.optimizer.model import FloatArray, LinearModel, Signals
from scheduler.optimizer.pricing import price_problem
from scheduler.optimizer.problem import PlanningProblem
from scheduler.pricing import (
    embodied_g,
    energy_from_tokens,
    grid_co2_g,
    offsite_water_l,
    onsite_water_l,
    sum_pieces,
)

_SHARE_EPS = 1e-9
_CAP_REL = 1e-9
#: Overshoot (relative) above which a batch's whole requests are taken out of the plan; the
#: contract's checker allows 0.01 %.
OVERFLOW_REL = 5e-5


@dataclass(slots=True)
class Piece:
    """Whole requests of one batch on one option and slot (mutable during repair)."""

    batch: PlanningBatch
    group: int
    option: Option
    slot: int
    requests: int
    gpu_h_per_req: float
    it_kwh_per_req: float
    fac_kwh_per_req: float


@dataclass(frozen=True, slots=True)
class Extraction:
    """Assignments of a solution, their exact totals, and notes on rounding repairs."""

    assignments: tuple[Assignment, ...]
    totals: PlanTotals
    notes: tuple[str, ...]
    overflow: tuple[str, ...] = ()  # batches left over a limit by more than the checker allows


def extract(model: LinearModel, values: FloatArray, first_objective: str) -> Extraction:
    """Turn LP shares into whole requests (largest remainder per batch), then repair overflows.

    Rounding can push a pool, a grid cap or a water cap over its limit by a few requests; those
    requests are moved one at a time to other allowed cells of the same batch with room, the
    cheapest by ``first_objective`` first. What cannot be moved is reported in the notes.
    """
    pieces = _round(model, values)
    usage = _Usage(model)
    for p in pieces:
        usage.add(p, p.requests)
    notes = _repair(model, pieces, usage, first_objective)
    kept = [p for p in pieces if p.requests > 0]
    over = usage.excess(kept)
    overflow = sorted(
        {p.batch.id for p in kept if max(usage.excess([p]).values()) > OVERFLOW_REL}
        if any(v > OVERFLOW_REL for v in over.values())
        else set()
    )
    assignments = tuple(_assignment(model.problem, p) for p in kept)
    totals = price_plan(model.problem, kept, assignments)
    return Extraction(assignments, totals, tuple(notes), tuple(overflow))


def _per_request(model: LinearModel, b: PlanningBatch, o: Option) -> tuple[float, float, float]:
    fleet = model.problem.fleet
    site = fleet.sites[o.site]
    pool = site.pools[o.pool]
    prof = fleet.models[o.model].profiles[pool.gpu]
    n = max(b.requests, 1)
    e = energy_from_tokens(prof, site.pue, b.input_tokens / n, b.output_tokens / n)
    return e.gpu_hours, e.it_kwh, e.facility_kwh


def _round(model: LinearModel, values: FloatArray) -> list[Piece]:
    x = values[: model.n_x]
    used = np.flatnonzero(x > _SHARE_EPS)
    by_group: dict[int, list[int]] = defaultdict(list)
    for col in used.tolist():
        by_group[int(model.col_group[col])].append(col)
    pieces: list[Piece] = []
    for k, group_cols in by_group.items():
        cols = np.array(group_cols, dtype=np.int64)
        shares = x[cols] / x[cols].sum()
        for b in model.groups[k].members:
            exact = shares * b.requests
            whole = np.floor(exact).astype(np.int64)
            left = int(b.requests - whole.sum())
            if left > 0:
                whole[np.argsort(-(exact - whole), kind="stable")[:left]] += 1
            for c, r in zip(group_cols, whole.tolist(), strict=True):
                if r > 0:
                    o = model.col_option[model.col_gopt[c]]
                    pieces.append(
                        Piece(b, k, o, int(model.col_slot[c]), int(r), *_per_request(model, b, o))
                    )
    return pieces


class _Usage:
    """Capacity, facility energy and water use per pool/site and slot, with the model's limits."""

    def __init__(self, model: LinearModel) -> None:
        fleet = model.problem.fleet
        self.sig = model.signals
        self.pool_of = {sp: i for i, sp in enumerate(model.pools)}
        n_t = len(model.problem.slots)
        self.cap = np.maximum(self.sig.capacity_gpu_h - self.sig.fixed_gpu_h, 0.0)
        self.gpu = np.zeros_like(self.cap)
        self.fac = self.sig.fixed_fac_kwh.copy()
        self.it_water = np.array(
            [
                [
                    onsite_water_l(site, self.sig.fixed_fac_kwh[s, t], self.sig.wue[s, t])
                    for t in range(n_t)
                ]
                for s, site in enumerate(fleet.sites)
            ]
        ).reshape(len(fleet.sites), n_t)
        self.grid_cap = [
            None if s.grid_cap_kw is None else s.grid_cap_kw * fleet.slot_hours for s in fleet.sites
        ]
        self.water_cap = [s.water_cap_l_per_day for s in fleet.sites]
        self.sites = fleet.sites
        self.day_slots: dict[object, list[int]] = defaultdict(list)
        for t, d in enumerate(self.sig.days):
            self.day_slots[d].append(t)
        # Limits already broken by fixed load alone are not the plan's to repair.
        self.grid_floor = np.maximum(self.sig.fixed_fac_kwh - self.sig.renewable_kwh, 0.0)

    def add(self, p: Piece, n: int) -> None:
        s, t = p.option.site, p.slot
        self.gpu[self.pool_of[(s, p.option.pool)], t] += n * p.gpu_h_per_req
        self.fac[s, t] += n * p.fac_kwh_per_req
        self.it_water[s, t] += n * p.it_kwh_per_req * self.sig.wue[s, t]

    def grid(self, s: int, t: int) -> float:
        return max(0.0, float(self.fac[s, t] - self.sig.renewable_kwh[s, t]))

    def pool_ok(self, pool: int, t: int) -> bool:
        cap = self.cap[pool, t]
        return bool(self.gpu[pool, t] <= cap * (1 + _CAP_REL) + 1e-12)

    def grid_ok(self, s: int, t: int) -> bool:
        cap = self.grid_cap[s]
        return (
            cap is None
            or self.grid(s, t) <= max(cap, self.grid_floor[s, t]) * (1 + _CAP_REL) + 1e-12
        )

    def water(self, s: int, t: int) -> float:
        day = self.day_slots[self.sig.days[t]]
        site = self.sites[s]
        return float(sum(self.it_water[s, u] + offsite_water_l(site, self.grid(s, u)) for u in day))

    def water_ok(self, s: int, t: int) -> bool:
        cap = self.water_cap[s]
        return cap is None or self.water(s, t) <= cap * (1 + _CAP_REL) + 1e-9

    def piece_ok(self, p: Piece) -> bool:
        s, t = p.option.site, p.slot
        return (
            self.pool_ok(self.pool_of[(s, p.option.pool)], t)
            and self.grid_ok(s, t)
            and self.water_ok(s, t)
        )

    def excess(self, pieces: Iterable[Piece]) -> dict[tuple[object, ...], float]:
        """Relative overshoot of every limit the pieces touch (0 where within the limit)."""
        out: dict[tuple[object, ...], float] = {}
        for p in pieces:
            s, t = p.option.site, p.slot
            pool = self.pool_of[(s, p.option.pool)]
            cap = self.cap[pool, t]
            out[("pool", pool, t)] = max(0.0, self.gpu[pool, t] - cap) / max(cap, 1e-9)
            gcap = self.grid_cap[s]
            if gcap is not None:
                lim = max(gcap, self.grid_floor[s, t])
                out[("grid", s, t)] = max(0.0, self.grid(s, t) - lim) / max(lim, 1e-9)
            wcap = self.water_cap[s]
            if wcap is not None:
                out[("water", s, self.sig.days[t])] = max(0.0, self.water(s, t) - wcap) / max(
                    wcap, 1e-9
                )
        return out


def _score(model: LinearModel, objective: str, p: Piece, o: Option, t: int) -> float:
    sig: Signals = model.signals
    fleet = model.problem.fleet
    s = o.site
    if objective == "cost":
        return float(p.fac_kwh_per_req * sig.price[s, t])
    if objective == "water":
        return float(
            p.it_kwh_per_req * sig.wue[s, t] + offsite_water_l(fleet.sites[s], p.fac_kwh_per_req)
        )
    if objective == "delay":
        return float(t)
    pool = fleet.sites[s].pools[o.pool]
    return float(
        embodied_g(pool, p.gpu_h_per_req) + grid_co2_g(p.fac_kwh_per_req, sig.carbon[s, t])
    )


def _repair(model: LinearModel, pieces: list[Piece], usage: _Usage, objective: str) -> list[str]:
    notes: list[str] = []
    by_cell = {(id(p.batch), p.option, p.slot): p for p in pieces}
    for _ in range(4):
        bad = [p for p in pieces if p.requests > 0 and not usage.piece_ok(p)]
        if not bad:
            return notes
        for src in bad:
            while src.requests > 0 and not usage.piece_ok(src):
                if not _move_one(model, src, pieces, by_cell, usage, objective):
                    break
    left = [p for p in pieces if p.requests > 0 and not usage.piece_ok(p)]
    if left:
        fleet = model.problem.fleet
        p = left[0]
        notes.append(
            f"rounding to whole requests leaves {fleet.sites[p.option.site].name} over a limit in "
            f"slot {model.problem.slots[p.slot].isoformat()} and no allowed cell has room for one "
            "more request; the overshoot is below one request per batch there"
        )
    return notes


def _move_one(
    model: LinearModel,
    src: Piece,
    pieces: list[Piece],
    by_cell: dict[tuple[int, Option, int], Piece],
    usage: _Usage,
    objective: str,
) -> bool:
    g = model.groups[src.group]
    targets = sorted(
        (
            (o, t)
            for o in g.options
            for t in range(g.slot_lo, g.slot_hi)
            if (o, t) != (src.option, src.slot)
        ),
        key=lambda ot: _score(model, objective, src, ot[0], ot[1]),
    )
    for o, t in targets:
        key = (id(src.batch), o, t)
        dst = by_cell.get(key)
        if dst is None:
            dst = Piece(src.batch, src.group, o, t, 0, *_per_request(model, src.batch, o))
        before = usage.excess((src, dst))
        usage.add(src, -1)
        usage.add(dst, 1)
        after = usage.excess((src, dst))
        # Accept a move that shrinks the total overshoot and breaks no limit that held before.
        if sum(after.values()) < sum(before.values()) - 1e-12 and all(
            after[r] <= _CAP_REL or before[r] > 0.0 for r in after
        ):
            src.requests -= 1
            dst.requests += 1
            if key not in by_cell:
                by_cell[key] = dst
                pieces.append(dst)
            return True
        usage.add(dst, -1)
        usage.add(src, 1)
    return False


def _assignment(problem: PlanningProblem, p: Piece) -> Assignment:
    fleet = problem.fleet
    site = fleet.sites[p.option.site]
    b = p.batch
    share = p.requests / b.requests if b.requests else 0.0
    return Assignment(
        batch=b.id,
        site=site.name,
        pool=site.pools[p.option.pool].name,
        model=fleet.models[p.option.model].name,
        slot=problem.slots[p.slot],
        requests=p.requests,
        input_tokens=b.input_tokens * share,
        output_tokens=b.output_tokens * share,
        gpu_hours=p.gpu_h_per_req * p.requests,
        energy_kwh=p.fac_kwh_per_req * p.requests,
    )


def price_plan(
    problem: PlanningProblem, pieces: Iterable[Piece], assignments: Iterable[Assignment]
) -> PlanTotals:
    """Totals of planning-formats.md section 4, priced by ``scheduler.pricing`` (the one rule).

    Each assignment is priced from its tokens with the problem's fixed loads as committed load,
    so a site-slot's grid energy is the plan's increment over it:
    ``max(0, F_fixed + F_plan - R h) - max(0, F_fixed - R h)``; the validator re-prices with
    the same function and gets the same figures. The delay is the token-weighted completion
    time per batch, times its priority.
    """
    total = sum_pieces(price_problem(problem, assignments))
    delay_num: dict[str, float] = defaultdict(float)
    tokens: dict[str, float] = defaultdict(float)
    batches: dict[str, PlanningBatch] = {}
    slot_end_h = problem.fleet.slot_hours
    for p in pieces:
        b = p.batch
        batches[b.id] = b
        share = p.requests / b.requests if b.requests else 0.0
        tok = (b.input_tokens + b.output_tokens) * share
        hours = (problem.slots[p.slot] - b.submitted_at).total_seconds() / 3600.0 + slot_end_h
        delay_num[b.id] += tok * hours
        tokens[b.id] += tok
    delay = sum(batches[k].priority * delay_num[k] / tokens[k] for k in delay_num if tokens[k] > 0)
    return PlanTotals(
        co2_g=total.co2_g,
        operational_co2_g=total.co2_location_g,
        embodied_co2_g=total.embodied_co2_g,
        cost=total.cost,
        water_l=total.water_l,
        energy_kwh=total.facility_kwh,
        grid_kwh=total.grid_kwh,
        delay_h=float(delay),
    )


def objective_value(totals: PlanTotals, objective: str) -> float:
    """The value of ``objective`` (carbon, cost, water, delay) in ``totals``."""
    return {
        "carbon": totals.co2_g,
        "cost": totals.cost,
        "water": totals.water_l,
        "delay": totals.delay_h,
    }.get(objective, math.nan)
