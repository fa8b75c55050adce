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
    (7) carbon cap    [carbon_cap]: carbon(x, grid) <= carbon_cap_g + fixed loads' grid carbon,
                      and per capped UTC day d [carbon_cap__dYYYYMMDD]:
            sum_{t in d} carbon(x, grid) <= carbon_cap_by_day_g[d] + fixed grid carbon of d;
            grid carbon in (7) is priced at cap_carbon_g_per_kwh (booking's factor) where given
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
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from scheduler.optimizer.aggregate import BatchGroup, Option
from scheduler.optimizer.lp_base import FloatArray, IntArray, Signals, dense_signals, lp_name
from scheduler.optimizer.lp_blocks import (
    PLACED,
    RowIndex,
    Rows,
    constraint_matrix,
    objective_vectors,
    placement_columns,
    rows_capacity,
    rows_carbon_cap,
    rows_complete,
    rows_grid,
    rows_gridmax,
    rows_water,
)
from scheduler.optimizer.problem import PlanningProblem

__all__ = [
    "HEADROOM",
    "PLACED",
    "FloatArray",
    "IntArray",
    "LinearModel",
    "Signals",
    "build_model",
    "dense_signals",
    "lp_name",
]

#: Capacity and caps in the LP are this fraction below their true value, so that rounding to
#: whole requests finds room to move a request without breaking a limit (0.001 %).
HEADROOM = 1e-5


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


def build_model(
    problem: PlanningProblem, groups: list[BatchGroup], *, headroom: float = HEADROOM
) -> LinearModel:
    """Build the LP of the module docstring for ``groups`` (completeness rows set to ``= 1``).

    One function per numbered constraint group, in row order: ``rows_complete`` (1),
    ``rows_capacity`` (2), ``rows_grid`` (3), ``rows_gridmax`` (4), ``rows_water`` (5),
    the grid cap (6) as column bounds here, ``rows_carbon_cap`` (7); (8) is added by
    ``solve.py``. Capacity, water and grid caps are scaled by ``1 - headroom`` (see
    ``HEADROOM``); the planner rebuilds with ``headroom=0`` when the scaled model cannot place
    everything.

    Raises:
        PlanningError: signals are missing for a (site, slot) of the horizon.
    """
    fleet = problem.fleet
    n_t = len(problem.slots)
    pools = [(s, p) for s, site in enumerate(fleet.sites) for p in range(len(site.pools))]
    sig = dense_signals(problem, pools)
    fixed_grid = np.maximum(sig.fixed_fac_kwh - sig.renewable_kwh, 0.0)
    rows = Rows()
    rows_complete(rows, len(groups))
    cap_base = rows_capacity(rows, problem, pools, sig, headroom)
    grid_base = rows_grid(rows, problem, sig)
    negrow = rows_gridmax(rows, problem, sig)
    waterrow = rows_water(rows, problem, sig, fixed_grid, headroom)
    carbon_cap_row, carbon_day_row = rows_carbon_cap(rows, problem, sig, fixed_grid)
    index = RowIndex(
        cap_base=cap_base,
        grid_base=grid_base,
        negrow=negrow,
        waterrow=waterrow,
        carbon_cap_row=carbon_cap_row,
        carbon_day_row=carbon_day_row,
    )
    x = placement_columns(problem, groups, pools, sig)
    ewif = np.array([site.ewif_l_per_kwh for site in fleet.sites])
    a_start, a_index, a_value = constraint_matrix(x, index, sig, ewif, n_t)
    # (6) grid cap: a column bound, never below the fixed loads' own grid energy
    grid_cap = np.array(
        [
            math.inf
            if site.grid_cap_kw is None
            else site.grid_cap_kw * fleet.slot_hours * (1 - headroom)
            for site in fleet.sites
        ]
    )
    grid_ub = np.maximum(grid_cap[:, None], fixed_grid).ravel()
    objectives, offsets = objective_vectors(problem, x, sig, ewif, fixed_grid)
    n_x = len(x.col_group)
    return LinearModel(
        problem=problem,
        groups=groups,
        pools=pools,
        signals=sig,
        col_group=x.col_group,
        col_option=x.col_option,
        col_gopt=x.col_gopt,
        col_slot=x.col_slot,
        gpu_h=x.gpu_h,
        it_kwh=x.it_kwh,
        fac_kwh=x.fac_kwh,
        objectives=objectives,
        col_lower=np.zeros(n_x + grid_ub.size),
        col_upper=np.concatenate([np.ones(n_x), grid_ub]),
        a_start=a_start,
        a_index=a_index,
        a_value=a_value,
        row_lower=np.concatenate(rows.lower),
        row_upper=np.concatenate(rows.upper),
        row_names=rows.names,
        carbon_cap_row=index.carbon_cap_row,
        offsets=offsets,
    )
