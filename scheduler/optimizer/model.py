"""Build the planning LP (sparse, column-wise) from a ``PlanningProblem``.

Notation of planning-formats.md. Sets: sites s, pools p of s (GPU type g), models m, slots t of
length h = slot_hours, groups k of interchangeable batches (``aggregate.py``; one batch per group
when aggregation is off), options o = (s, p, m) a group may use (fit, residency, model choice).

Variables:
    x[k,o,t] in [0, 1]   share of group k's tokens run on option o in slot t; created only for
                         feasible cells (fit, window t in [lo_k, hi_k), residency, model choice)
    grid[s,t] >= 0       grid energy of site s in slot t (kWh), <= grid_cap_kw(s) * h

Per cell coefficients (I_k, O_k: tokens of the group):
    H[k,o]  = gpus(m,g) * (I_k / prefill_tok_s(m,g) + O_k / decode_tok_s(m,g)) / 3600   GPU-h
    E[k,o]  = H[k,o] * power_w(m,g) / 1000                                              IT kWh
    F[k,o]  = E[k,o] * pue(s)                                                     facility kWh

Constraints (numbered groups; row names in brackets, [a-z0-9_] only):
    (1) completeness  [complete__gK]:   sum_{o,t} x[k,o,t] = 1          (placement stage: in [0, 1])
    (2) capacity      [capacity__SITE__POOL__tT]:
            sum_{k,m} H[k,o] x[k,o,t] <= count(p) * h * available(t) - fixed_gpu_h(s,p,t)
    (3) grid balance  [grid__SITE__tT]:
            sum F[k,o] x[k,o,t] - grid[s,t] <= renewable_kw(s,t) * h - fixed_facility_kwh(s,t)
    (4) grid ceiling  [gridmax__SITE__tT], only where price(s,t) < 0:
            grid[s,t] - sum F[k,o] x[k,o,t] <= fixed_facility_kwh(s,t)
    (5) water cap     [water__SITE__dYYYYMMDD], sites with water_cap_l_per_day, per UTC day d:
            sum_{t in d} (sum E x * wue(s,t) + ewif(s) * grid[s,t]) <= cap - fixed water
    (6) grid cap      (column bound) grid[s,t] <= grid_cap_kw(s) * h
    (7) carbon cap    [carbon_cap]: carbon(x, grid) <= carbon_cap_g + fixed loads' grid carbon
    (8) lexicographic [lex__OBJ]: added by ``solve.py`` after each stage.

Windows (t_start >= submitted_at, t_end <= deadline) and residency are enforced by creating
columns only for allowed cells. Objectives (vectors over all columns):
    carbon = sum H x * embodied_g_per_gpu_hour(p) + sum grid[s,t] * carbon_g_per_kwh(s,t)
    cost   = sum grid[s,t] * price_per_kwh(s,t)  (+ carbon_price_per_g * carbon, the pacer's price)
    water  = sum E x * wue(s,t) + sum grid[s,t] * ewif(s)
    delay  = sum x[k,o,t] * (P_k * t_end_h(t) - sum_{b in k} priority_b * submitted_h(b)),
             P_k = sum of member priorities; exact because (1) makes the shares sum to one.
    placed = sum x[k,o,t] * tokens_k / 1e6  (maximised first when not everything fits)

Negative prices: grid >= F - R*h, grid >= 0 is the exact ``max`` wherever the objective rewards
less grid energy (price >= 0, every carbon and water term). Where a price is negative, the cost
stage would like more grid energy, so (4) caps grid at the facility energy: with no renewables
there this is exact (grid = F); with renewables it is the LP relaxation of the binary choice, and
the LP may count up to |price| * min(F, R*h) of earnings that exact pricing does not pay. Plans
are always re-priced exactly (``extract.py``), so reported totals never include that optimism.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import numpy as np
import numpy.typing as npt

from scheduler.domain import Objective
from scheduler.errors import PlanningError
from scheduler.optimizer.aggregate import BatchGroup, Option
from scheduler.optimizer.problem import PlanningProblem

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
PLACED = "placed"
#: Capacity and caps in the LP are this fraction below their true value, so that rounding to
#: whole requests finds room to move a request without breaking a limit (0.001 %).
HEADROOM = 1e-5
_NAME_RE = re.compile(r"[^a-z0-9_]+")


def lp_name(*parts: object) -> str:
    """Join parts with ``__`` and keep only ``[a-z0-9_]`` (PuLP rewrites other characters)."""
    return "__".join(_NAME_RE.sub("_", str(p).lower()) for p in parts)


@dataclass(frozen=True, slots=True)
class Signals:
    """Signals as dense ``[site, slot]`` arrays, plus the fixed load already committed."""

    carbon: FloatArray
    price: FloatArray
    renewable_kwh: FloatArray
    wue: FloatArray
    fixed_gpu_h: FloatArray  # [pool_flat, slot]
    fixed_fac_kwh: FloatArray  # [site, slot]
    capacity_gpu_h: FloatArray  # [pool_flat, slot], before fixed load
    days: tuple[date, ...]  # UTC day of each slot start


@dataclass(slots=True)
class LinearModel:
    """The LP in column-wise sparse form, with what extraction needs to read it back.

    Columns ``0 .. n_x - 1`` are ``x`` cells; column ``n_x + s * T + t`` is ``grid[s, t]``.
    """

    problem: PlanningProblem
    groups: list[BatchGroup]
    pools: list[tuple[int, int]]  # flat pool index -> (site, pool within site)
    signals: Signals
    col_group: IntArray
    col_option: list[Option]  # per group-option, via col_gopt
    col_gopt: IntArray  # index into col_option
    col_slot: IntArray
    gpu_h: FloatArray  # H per unit share
    it_kwh: FloatArray  # E per unit share
    fac_kwh: FloatArray  # F per unit share
    objectives: dict[str, FloatArray]
    col_lower: FloatArray
    col_upper: FloatArray
    a_start: npt.NDArray[np.int32]
    a_index: npt.NDArray[np.int32]
    a_value: FloatArray
    row_lower: FloatArray
    row_upper: FloatArray
    row_names: list[str]
    carbon_cap_row: int | None
    offsets: dict[str, float] = field(default_factory=dict)

    @property
    def n_x(self) -> int:
        """Number of placement columns."""
        return len(self.col_group)

    @property
    def n_cols(self) -> int:
        """Number of columns (placement and grid)."""
        return len(self.col_lower)

    @property
    def n_rows(self) -> int:
        """Number of rows."""
        return len(self.row_lower)

    def col_names(self) -> list[str]:
        """Readable column names (only built for the PuLP path and debugging)."""
        fleet = self.problem.fleet
        names = []
        for c in range(self.n_x):
            o = self.col_option[self.col_gopt[c]]
            site = fleet.sites[o.site]
            names.append(
                lp_name(
                    "x",
                    f"g{self.col_group[c]}",
                    site.name,
                    site.pools[o.pool].name,
                    fleet.models[o.model].name,
                    f"t{self.col_slot[c]}",
                )
            )
        n_t = len(self.problem.slots)
        for site in fleet.sites:
            names += [lp_name("gridkwh", site.name, f"t{t}") for t in range(n_t)]
        return names


def dense_signals(problem: PlanningProblem, pools: list[tuple[int, int]]) -> Signals:
    """Signals and fixed loads as arrays.

    Raises:
        PlanningError: a (site, slot) of the horizon has no signal.
    """
    fleet = problem.fleet
    n_s, n_t = len(fleet.sites), len(problem.slots)
    shape = (n_s, n_t)
    carbon, price, ren, wue = (np.zeros(shape) for _ in range(4))
    sh = fleet.slot_hours
    for s, site in enumerate(fleet.sites):
        for t, slot in enumerate(problem.slots):
            sig = problem.signals.get((site.name, slot))
            if sig is None:
                raise PlanningError(
                    f"no forecast for site {site.name} at {slot.isoformat()}; every site needs "
                    "a signal for every slot of the horizon"
                )
            carbon[s, t] = sig.carbon_g_per_kwh
            price[s, t] = sig.price_per_kwh
            ren[s, t] = max(0.0, sig.renewable_kw) * sh
            wue[s, t] = site.wue_l_per_kwh if sig.wue_l_per_kwh is None else sig.wue_l_per_kwh
    slot_index = {slot: t for t, slot in enumerate(problem.slots)}
    site_index = {s.name: i for i, s in enumerate(fleet.sites)}
    pool_index = {
        (fleet.sites[s].name, fleet.sites[s].pools[p].name): i for i, (s, p) in enumerate(pools)
    }
    fixed_gpu = np.zeros((len(pools), n_t))
    fixed_fac = np.zeros(shape)
    for f in problem.fixed:
        ft = slot_index.get(f.slot)
        if ft is None or f.site not in site_index:
            continue
        t = ft
        fixed_fac[site_index[f.site], t] += f.facility_kwh
        if (f.site, f.pool) in pool_index:
            fixed_gpu[pool_index[(f.site, f.pool)], t] += f.gpu_hours
    avail = np.array([problem.slot_available.get(slot, 1.0) for slot in problem.slots])
    counts = np.array([fleet.sites[s].pools[p].count for s, p in pools], dtype=float)
    capacity = counts[:, None] * sh * avail[None, :]
    days = tuple(_utc_day(slot) for slot in problem.slots)
    return Signals(carbon, price, ren, wue, fixed_gpu, fixed_fac, capacity, days)


def _utc_day(t: datetime) -> date:
    return t.astimezone(UTC).date() if t.tzinfo is not None else t.date()


def build_model(
    problem: PlanningProblem, groups: list[BatchGroup], *, headroom: float = HEADROOM
) -> LinearModel:
    """Build the LP of the module docstring for ``groups`` (completeness rows set to ``= 1``).

    Capacity, water and grid caps are scaled by ``1 - headroom`` (see ``HEADROOM``); the planner
    rebuilds with ``headroom=0`` when the scaled model cannot place everything.

    Raises:
        PlanningError: signals are missing for a (site, slot) of the horizon.
    """
    fleet = problem.fleet
    sh = fleet.slot_hours
    n_s, n_t, n_g = len(fleet.sites), len(problem.slots), len(groups)
    pools = [(s, p) for s, site in enumerate(fleet.sites) for p in range(len(site.pools))]
    pool_flat = {sp: i for i, sp in enumerate(pools)}
    sig = dense_signals(problem, pools)
    epoch = problem.slots[0]
    t_end_h = np.array(
        [(slot - epoch).total_seconds() / 3600.0 + sh for slot in problem.slots], dtype=float
    )

    # Row blocks, in ascending order so that every column's entries come out sorted.
    names: list[str] = [lp_name("complete", f"g{k}") for k in range(n_g)]
    lower: list[FloatArray] = [np.ones(n_g)]
    upper: list[FloatArray] = [np.ones(n_g)]
    cap_base = len(names)
    for s, p in pools:
        site = fleet.sites[s]
        names += [lp_name("capacity", site.name, site.pools[p].name, f"t{t}") for t in range(n_t)]
    cap_ub = np.maximum(sig.capacity_gpu_h * (1 - headroom) - sig.fixed_gpu_h, 0.0).ravel()
    lower.append(np.full(len(pools) * n_t, -math.inf))
    upper.append(cap_ub)
    grid_base = len(names)
    for site in fleet.sites:
        names += [lp_name("grid", site.name, f"t{t}") for t in range(n_t)]
    lower.append(np.full(n_s * n_t, -math.inf))
    upper.append((sig.renewable_kwh - sig.fixed_fac_kwh).ravel())
    negrow = np.full((n_s, n_t), -1, dtype=np.int64)
    neg = np.argwhere(sig.price < 0)
    negrow[neg[:, 0], neg[:, 1]] = len(names) + np.arange(len(neg))
    names += [lp_name("gridmax", fleet.sites[s].name, f"t{t}") for s, t in neg]
    lower.append(np.full(len(neg), -math.inf))
    upper.append(sig.fixed_fac_kwh[neg[:, 0], neg[:, 1]] if len(neg) else np.zeros(0))
    fixed_grid = np.maximum(sig.fixed_fac_kwh - sig.renewable_kwh, 0.0)
    waterrow = np.full((n_s, n_t), -1, dtype=np.int64)
    water_ub: list[float] = []
    for s, site in enumerate(fleet.sites):
        if site.water_cap_l_per_day is None:
            continue
        pue = site.pue
        for day in sorted(set(sig.days)):
            ts = [t for t in range(n_t) if sig.days[t] == day]
            waterrow[s, ts] = len(names)
            names.append(lp_name("water", site.name, f"d{day:%Y%m%d}"))
            fixed_it = float(sum(sig.fixed_fac_kwh[s, t] / pue * sig.wue[s, t] for t in ts))
            fixed_gw = float(sum(fixed_grid[s, t] for t in ts)) * site.ewif_l_per_kwh
            water_ub.append(max(site.water_cap_l_per_day * (1 - headroom) - fixed_it, fixed_gw))
    lower.append(np.full(len(water_ub), -math.inf))
    upper.append(np.array(water_ub, dtype=float))
    carbon_cap_row: int | None = None
    fixed_carbon = float((fixed_grid * sig.carbon).sum())
    if problem.carbon_cap_g is not None:
        carbon_cap_row = len(names)
        names.append("carbon_cap")
        lower.append(np.array([-math.inf]))
        upper.append(np.array([problem.carbon_cap_g + fixed_carbon]))

    # Placement columns, one block per group: options x slots of its window.
    col_option: list[Option] = []
    g_idx, go_idx, t_idx, h_parts = [], [], [], []
    for k, g in enumerate(groups):
        n_w = g.slot_hi - g.slot_lo
        for o in g.options:
            model = fleet.models[o.model]
            pool = fleet.sites[o.site].pools[o.pool]
            prof = model.profiles[pool.gpu]
            cell_gpu_h = (
                prof.gpus
                * (g.input_tokens / prof.prefill_tok_s + g.output_tokens / prof.decode_tok_s)
                / 3600.0
            )
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
    ewif = np.array([site.ewif_l_per_kwh for site in fleet.sites])
    it_kwh = gpu_h * opt_power / 1000.0
    fac_kwh = it_kwh * pue_s[opt_site]
    n_x = len(col_group)

    x_carbon = gpu_h * opt_emb
    x_water = it_kwh * sig.wue[opt_site, col_slot]
    prio = np.array([g.priority_sum for g in groups])
    off = np.array([g.delay_offset_h for g in groups])
    x_delay = prio[col_group] * t_end_h[col_slot] - off[col_group] if n_x else np.zeros(0)
    tokens = np.array([g.tokens for g in groups])
    x_placed = tokens[col_group] / 1e6 if n_x else np.zeros(0)

    # Column-wise entries of x: complete, capacity, grid, gridmax, water, carbon cap.
    xi = np.full((n_x, 6), -1, dtype=np.int64)
    xv = np.zeros((n_x, 6))
    xi[:, 0], xv[:, 0] = col_group, 1.0
    xi[:, 1], xv[:, 1] = cap_base + opt_pool * n_t + col_slot, gpu_h
    xi[:, 2], xv[:, 2] = grid_base + opt_site * n_t + col_slot, fac_kwh
    xi[:, 3], xv[:, 3] = negrow[opt_site, col_slot], -fac_kwh
    xi[:, 4], xv[:, 4] = waterrow[opt_site, col_slot], x_water
    if carbon_cap_row is not None:
        xi[:, 5], xv[:, 5] = carbon_cap_row, x_carbon
    # Grid columns: grid balance (-1), gridmax (+1), water (ewif), carbon cap (carbon).
    gs = np.repeat(np.arange(n_s), n_t)
    gt = np.tile(np.arange(n_t), n_s)
    gi = np.full((n_s * n_t, 4), -1, dtype=np.int64)
    gv = np.zeros((n_s * n_t, 4))
    gi[:, 0], gv[:, 0] = grid_base + gs * n_t + gt, -1.0
    gi[:, 1], gv[:, 1] = negrow[gs, gt], 1.0
    gi[:, 2], gv[:, 2] = waterrow[gs, gt], ewif[gs]
    if carbon_cap_row is not None:
        gi[:, 3], gv[:, 3] = carbon_cap_row, sig.carbon[gs, gt]
    a_start, a_index, a_value = _csc([(xi, xv), (gi, gv)])

    grid_cap = np.array(
        [
            math.inf if site.grid_cap_kw is None else site.grid_cap_kw * sh * (1 - headroom)
            for site in fleet.sites
        ]
    )
    grid_ub = np.maximum(grid_cap[:, None], fixed_grid).ravel()
    carbon_g = sig.carbon.ravel()
    price = sig.price.ravel()
    zeros_g = np.zeros(n_s * n_t)
    objectives = {
        Objective.CARBON.value: cat([x_carbon, carbon_g]),
        Objective.COST.value: cat([np.zeros(n_x), price]),
        Objective.WATER.value: cat([x_water, ewif[gs]]),
        Objective.DELAY.value: cat([x_delay, zeros_g]),
        PLACED: cat([-x_placed, zeros_g]),
    }
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
    return LinearModel(
        problem=problem,
        groups=groups,
        pools=pools,
        signals=sig,
        col_group=col_group,
        col_option=col_option,
        col_gopt=col_gopt,
        col_slot=col_slot,
        gpu_h=gpu_h,
        it_kwh=it_kwh,
        fac_kwh=fac_kwh,
        objectives=objectives,
        col_lower=np.zeros(n_x + n_s * n_t),
        col_upper=cat([np.ones(n_x), grid_ub]),
        a_start=a_start,
        a_index=a_index,
        a_value=a_value,
        row_lower=cat(lower),
        row_upper=cat(upper),
        row_names=names,
        carbon_cap_row=carbon_cap_row,
        offsets=offsets,
    )


def _csc(
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
