"""The planning LP's blocks, one function per numbered constraint group of ``model.py``'s
docstring, the placement columns, the matrix and the objective vectors."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from scheduler.domain import Objective
from scheduler.optimizer.aggregate import BatchGroup, Option
from scheduler.optimizer.lp_base import FloatArray, IntArray, Signals, lp_name
from scheduler.optimizer.problem import PlanningProblem
from scheduler.pricing import offsite_water_l, onsite_water_l, piece_gpu_hours

PLACED = "placed"


@dataclass(slots=True)
class Rows:
    """Row blocks appended in ascending order (so every column's entries come out sorted)."""

    names: list[str] = field(default_factory=list)
    lower: list[FloatArray] = field(default_factory=list)
    upper: list[FloatArray] = field(default_factory=list)

    def add(self, names: list[str], lower: FloatArray, upper: FloatArray) -> int:
        """Append a block; return the index of its first row."""
        base = len(self.names)
        self.names += names
        self.lower.append(lower)
        self.upper.append(upper)
        return base


@dataclass(frozen=True, slots=True)
class RowIndex:
    """Where each constraint group's rows start, per (site or pool, slot); -1 = no row."""

    cap_base: int
    grid_base: int
    negrow: IntArray  # [site, slot] -> gridmax row
    waterrow: IntArray  # [site, slot] -> water row of its day
    carbon_cap_row: int | None  # the whole horizon's cap row
    carbon_day_row: IntArray  # [slot] -> carbon cap row of its UTC day, -1 = none


@dataclass(frozen=True, slots=True)
class Columns:
    """The placement columns x[k,o,t] and their per-column coefficients."""

    col_option: list[Option]
    col_group: IntArray
    col_gopt: IntArray
    col_slot: IntArray
    gpu_h: FloatArray
    opt_site: IntArray
    opt_pool: IntArray
    it_kwh: FloatArray
    fac_kwh: FloatArray
    carbon: FloatArray
    water: FloatArray
    delay: FloatArray
    placed: FloatArray


def rows_complete(rows: Rows, n_g: int) -> None:
    """(1) completeness: every group placed once (``= 1``; the placement stage relaxes it)."""
    rows.add([lp_name("complete", f"g{k}") for k in range(n_g)], np.ones(n_g), np.ones(n_g))


def rows_capacity(
    rows: Rows,
    problem: PlanningProblem,
    pools: list[tuple[int, int]],
    sig: Signals,
    headroom: float,
) -> int:
    """(2) capacity per pool and slot, less the fixed load; returns the block's first row."""
    fleet, n_t = problem.fleet, len(problem.slots)
    names = [
        lp_name("capacity", fleet.sites[s].name, fleet.sites[s].pools[p].name, f"t{t}")
        for s, p in pools
        for t in range(n_t)
    ]
    cap_ub = np.maximum(sig.capacity_gpu_h * (1 - headroom) - sig.fixed_gpu_h, 0.0).ravel()
    return rows.add(names, np.full(len(pools) * n_t, -math.inf), cap_ub)


def rows_grid(rows: Rows, problem: PlanningProblem, sig: Signals) -> int:
    """(3) grid balance per site and slot; returns the block's first row."""
    fleet, n_t = problem.fleet, len(problem.slots)
    names = [lp_name("grid", site.name, f"t{t}") for site in fleet.sites for t in range(n_t)]
    lower = np.full(len(fleet.sites) * n_t, -math.inf)
    return rows.add(names, lower, (sig.renewable_kwh - sig.fixed_fac_kwh).ravel())


def rows_gridmax(rows: Rows, problem: PlanningProblem, sig: Signals) -> IntArray:
    """(4) grid ceiling where the price is negative; returns the row of each (site, slot)."""
    negrow = np.full(sig.price.shape, -1, dtype=np.int64)
    neg = np.argwhere(sig.price < 0)
    negrow[neg[:, 0], neg[:, 1]] = len(rows.names) + np.arange(len(neg))
    names = [lp_name("gridmax", problem.fleet.sites[s].name, f"t{t}") for s, t in neg]
    upper = sig.fixed_fac_kwh[neg[:, 0], neg[:, 1]] if len(neg) else np.zeros(0)
    rows.add(names, np.full(len(neg), -math.inf), upper)
    return negrow


def rows_water(
    rows: Rows, problem: PlanningProblem, sig: Signals, fixed_grid: FloatArray, headroom: float
) -> IntArray:
    """(5) water cap per site and UTC day; returns the row of each (site, slot)."""
    n_t = len(problem.slots)
    waterrow = np.full(sig.price.shape, -1, dtype=np.int64)
    names: list[str] = []
    water_ub: list[float] = []
    for s, site in enumerate(problem.fleet.sites):
        if site.water_cap_l_per_day is None:
            continue
        for day in sorted(set(sig.days)):
            ts = [t for t in range(n_t) if sig.days[t] == day]
            waterrow[s, ts] = len(rows.names) + len(names)
            names.append(lp_name("water", site.name, f"d{day:%Y%m%d}"))
            fixed_it = sum(onsite_water_l(site, sig.fixed_fac_kwh[s, t], sig.wue[s, t]) for t in ts)
            fixed_gw = offsite_water_l(site, float(sum(fixed_grid[s, t] for t in ts)))
            water_ub.append(max(site.water_cap_l_per_day * (1 - headroom) - fixed_it, fixed_gw))
    rows.add(names, np.full(len(water_ub), -math.inf), np.array(water_ub, dtype=float))
    return waterrow


def rows_carbon_cap(
    rows: Rows, problem: PlanningProblem, sig: Signals, fixed_grid: FloatArray
) -> tuple[int | None, IntArray]:
    """(7) carbon cap (the budget): one row for the horizon (``carbon_cap_g``) and one per
    capped UTC day (``carbon_cap_by_day_g``, the slots starting that day), each bound raised by
    the fixed loads' grid carbon it covers. Grid carbon is priced at ``sig.cap_carbon`` (the
    factor booking charges to the budget). Returns the horizon row (or None) and each slot's
    day row (-1 = none)."""
    fixed = fixed_grid * sig.cap_carbon
    total_row = None
    if problem.carbon_cap_g is not None:
        upper = np.array([problem.carbon_cap_g + float(fixed.sum())])
        total_row = rows.add(["carbon_cap"], np.array([-math.inf]), upper)
    day_row = np.full(len(problem.slots), -1, dtype=np.int64)
    names: list[str] = []
    ub: list[float] = []
    for day in sorted(set(sig.days)):
        cap = problem.carbon_cap_by_day_g.get(day)
        if cap is None:
            continue
        ts = [t for t, d in enumerate(sig.days) if d == day]
        day_row[ts] = len(rows.names) + len(names)
        names.append(lp_name("carbon_cap", f"d{day:%Y%m%d}"))
        ub.append(cap + float(fixed[:, ts].sum()))
    rows.add(names, np.full(len(ub), -math.inf), np.array(ub, dtype=float))
    return total_row, day_row


def placement_columns(
    problem: PlanningProblem,
    groups: list[BatchGroup],
    pools: list[tuple[int, int]],
    sig: Signals,
) -> Columns:
    """One block of columns per group: its options x the slots of its window, with H, E, F."""
    fleet, sh = problem.fleet, problem.fleet.slot_hours
    pool_flat = {sp: i for i, sp in enumerate(pools)}
    col_option: list[Option] = []
    g_idx, go_idx, t_idx, h_parts = [], [], [], []
    for k, g in enumerate(groups):
        n_w = g.slot_hi - g.slot_lo
        for o in g.options:
            prof = fleet.models[o.model].profiles[fleet.sites[o.site].pools[o.pool].gpu]
            cell_gpu_h = piece_gpu_hours(prof, g.input_tokens, g.output_tokens)
            go_idx.append(np.full(n_w, len(col_option), dtype=np.int64))
            col_option.append(o)
            g_idx.append(np.full(n_w, k, dtype=np.int64))
            t_idx.append(np.arange(g.slot_lo, g.slot_hi, dtype=np.int64))
            h_parts.append(np.full(n_w, cell_gpu_h))
    cat = np.concatenate
    col_group = cat(g_idx) if g_idx else np.zeros(0, dtype=np.int64)
    col_gopt = cat(go_idx) if go_idx else np.zeros(0, dtype=np.int64)
    col_slot = cat(t_idx) if t_idx else np.zeros(0, dtype=np.int64)
    gpu_h = cat(h_parts) if h_parts else np.zeros(0)
    opt_site = np.array([o.site for o in col_option], dtype=np.int64)[col_gopt]
    opt_pool = np.array([pool_flat[(o.site, o.pool)] for o in col_option], dtype=np.int64)[col_gopt]
    opt_power = np.array(
        [
            fleet.models[o.model].profiles[fleet.sites[o.site].pools[o.pool].gpu].power_w
            for o in col_option
        ]
    )[col_gopt]
    opt_emb = np.array(
        [fleet.sites[o.site].pools[o.pool].embodied_g_per_gpu_hour for o in col_option]
    )[col_gopt]
    pue_s = np.array([site.pue for site in fleet.sites])
    it_kwh = gpu_h * opt_power / 1000.0
    n_x = len(col_group)
    epoch = problem.slots[0]
    t_end_h = np.array(
        [(slot - epoch).total_seconds() / 3600.0 + sh for slot in problem.slots], dtype=float
    )
    prio = np.array([g.priority_sum for g in groups])
    off = np.array([g.delay_offset_h for g in groups])
    tokens = np.array([g.tokens for g in groups])
    return Columns(
        col_option=col_option,
        col_group=col_group,
        col_gopt=col_gopt,
        col_slot=col_slot,
        gpu_h=gpu_h,
        opt_site=opt_site,
        opt_pool=opt_pool,
        it_kwh=it_kwh,
        fac_kwh=it_kwh * pue_s[opt_site],
        carbon=gpu_h * opt_emb,
        water=it_kwh * sig.wue[opt_site, col_slot],
        delay=prio[col_group] * t_end_h[col_slot] - off[col_group] if n_x else np.zeros(0),
        placed=tokens[col_group] / 1e6 if n_x else np.zeros(0),
    )


def constraint_matrix(
    x: Columns, rows: RowIndex, sig: Signals, ewif: FloatArray, n_t: int
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32], FloatArray]:
    """The constraint matrix, column-wise: x entries, then the grid columns' entries."""
    n_x, n_s = len(x.col_group), sig.carbon.shape[0]
    # Column-wise entries of x: complete, capacity, grid, gridmax, water, carbon cap, day cap.
    xi = np.full((n_x, 7), -1, dtype=np.int64)
    xv = np.zeros((n_x, 7))
    xi[:, 0], xv[:, 0] = x.col_group, 1.0
    xi[:, 1], xv[:, 1] = rows.cap_base + x.opt_pool * n_t + x.col_slot, x.gpu_h
    xi[:, 2], xv[:, 2] = rows.grid_base + x.opt_site * n_t + x.col_slot, x.fac_kwh
    xi[:, 3], xv[:, 3] = rows.negrow[x.opt_site, x.col_slot], -x.fac_kwh
    xi[:, 4], xv[:, 4] = rows.waterrow[x.opt_site, x.col_slot], x.water
    if rows.carbon_cap_row is not None:
        xi[:, 5], xv[:, 5] = rows.carbon_cap_row, x.carbon
    xi[:, 6], xv[:, 6] = rows.carbon_day_row[x.col_slot], x.carbon
    # Grid columns: grid balance (-1), gridmax (+1), water (ewif), carbon caps (cap factor).
    gs = np.repeat(np.arange(n_s), n_t)
    gt = np.tile(np.arange(n_t), n_s)
    gi = np.full((n_s * n_t, 5), -1, dtype=np.int64)
    gv = np.zeros((n_s * n_t, 5))
    gi[:, 0], gv[:, 0] = rows.grid_base + gs * n_t + gt, -1.0
    gi[:, 1], gv[:, 1] = rows.negrow[gs, gt], 1.0
    gi[:, 2], gv[:, 2] = rows.waterrow[gs, gt], ewif[gs]
    if rows.carbon_cap_row is not None:
        gi[:, 3], gv[:, 3] = rows.carbon_cap_row, sig.cap_carbon[gs, gt]
    gi[:, 4], gv[:, 4] = rows.carbon_day_row[gt], sig.cap_carbon[gs, gt]
    return csc([(xi, xv), (gi, gv)])


def objective_vectors(
    problem: PlanningProblem, x: Columns, sig: Signals, ewif: FloatArray, fixed_grid: FloatArray
) -> tuple[dict[str, FloatArray], dict[str, float]]:
    """The objective vectors over all columns, and the fixed loads' constant terms."""
    cat = np.concatenate
    n_x, (n_s, n_t) = len(x.col_group), sig.carbon.shape
    gs = np.repeat(np.arange(n_s), n_t)
    zeros_g = np.zeros(n_s * n_t)
    objectives = {
        Objective.CARBON.value: cat([x.carbon, sig.carbon.ravel()]),
        Objective.COST.value: cat([np.zeros(n_x), sig.price.ravel()]),
        Objective.WATER.value: cat([x.water, ewif[gs]]),
        Objective.DELAY.value: cat([x.delay, zeros_g]),
        PLACED: cat([-x.placed, zeros_g]),
    }
    fixed_carbon = float((fixed_grid * sig.carbon).sum())
    if problem.carbon_price_per_g:
        objectives[Objective.COST.value] = (
            objectives[Objective.COST.value]
            + problem.carbon_price_per_g * objectives[Objective.CARBON.value]
        )
    offsets = {
        Objective.CARBON.value: fixed_carbon,
        Objective.COST.value: float((fixed_grid * sig.price).sum())
        + problem.carbon_price_per_g * fixed_carbon,
        Objective.WATER.value: float((fixed_grid * ewif[:, None]).sum()),
        Objective.DELAY.value: 0.0,
    }
    return objectives, offsets


def csc(
    blocks: list[tuple[IntArray, FloatArray]],
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32], FloatArray]:
    """Column-wise arrays from per-column entry tables (row -1 = no entry)."""
    counts, index, value = [], [], []
    for idx, val in blocks:
        mask = idx >= 0
        counts.append(mask.sum(axis=1))
        index.append(idx[mask])
        value.append(val[mask])
    cnt = np.concatenate(counts)
    start = np.zeros(len(cnt) + 1, dtype=np.int32)
    np.cumsum(cnt, out=start[1:])
    return start, np.concatenate(index).astype(np.int32), np.concatenate(value)
