"""Column generation over the planning LP: HiGHS solves a restricted master, numpy prices the rest.

The LP has few rows (groups + pools x slots + sites x slots) and very many columns (every
feasible cell of every batch). Most cells are never used, so the master starts from a few cheap
cells per group plus one artificial column per group (an "unplaced" share with a big cost that
keeps the master feasible and steers pricing towards cells that place work), and each round
adds the cells whose reduced cost ``r_j = c_j - y . A_j`` is negative. Every round proves a lower
bound on the full LP, ``z + sum_j min(0, r_j) u_j`` over the cells left out of the master (with
the master's duals, that is the full LP's dual objective); when no cell prices out the bound
meets ``z`` and the status is ``optimal``.

The artificial columns only steer: they never decide infeasibility. When the master ends with an
unplaced share, a placement stage (completeness relaxed to ``<= 1``, artificial columns off,
placed tokens maximised, by the same column generation) decides it for the full LP: either it
places every group, and the stage goes on from those cells with the artificial columns fixed at
zero, or it proves that not everything fits and the run is ``infeasible``. After a stage with no
slack, ``restrict_to_optimal_face`` keeps the next stages on that stage's optimal face instead
of adding a dense lexicographic row (see its docstring and docs/optimizer.md).
"""

from __future__ import annotations

import math
import time

import highspy
import numpy as np
import numpy.typing as npt

from scheduler.errors import PlanningError
from scheduler.optimizer.backends.base import RunResult
from scheduler.optimizer.model import PLACED, FloatArray, LinearModel

_SEED_PER_GROUP = 4
_ADD_PER_GROUP = 6
_MAX_ROUNDS = 400
_PURGE_ABOVE_PER_ROW = 6
#: A group counts as placed when its share is at least this (the artificial share below 1e-7).
_FULL = 1.0 - 1e-7


class ColumnGenerationBackend:
    """A ``Backend`` that keeps only priced-in placement columns in HiGHS."""

    name = "highs-colgen"

    def __init__(self, model: LinearModel) -> None:
        """Load the rows, every grid column and one artificial column per group."""
        self._m = model
        self._h = highspy.Highs()
        self._h.setOptionValue("output_flag", False)
        self._h.setOptionValue("threads", 1)
        # Re-solves start from the previous basis; presolve would discard it (measured: ~30 %
        # slower with presolve on the 2,000-batch benchmark).
        self._h.setOptionValue("presolve", "off")
        n_x, n_g = model.n_x, len(model.groups)
        self._n_grid = model.n_cols - n_x
        self._n_groups = n_g
        self._in = np.zeros(n_x, dtype=bool)
        self._banned = np.zeros(n_x, dtype=bool)  # off the optimal face of an earlier stage
        self._row_lower = model.row_lower.astype(np.float64)
        self._row_upper = model.row_upper.astype(np.float64)
        self._last_status = ""
        self._grid_lower = np.zeros(model.n_cols - n_x)
        self._grid_upper = model.col_upper[n_x:].astype(np.float64)
        self._rmp_cols: list[npt.NDArray[np.int64]] = []  # model x-column of each added column
        self._lex: list[FloatArray] = []
        self._cost = np.zeros(model.n_cols)
        self._placement = False
        self._phase_one = False  # deciding placement: stop as soon as everything is placed
        self._snapshot: tuple[FloatArray, npt.NDArray[np.int64]] | None = None
        self._snapshot_duals: FloatArray | None = None
        lp = highspy.HighsLp()
        lp.num_col_ = self._n_grid + n_g
        lp.num_row_ = model.n_rows
        lp.col_cost_ = np.zeros(lp.num_col_)
        lp.col_lower_ = np.zeros(lp.num_col_)
        lp.col_upper_ = np.concatenate([model.col_upper[n_x:], np.ones(n_g)])
        lp.row_lower_ = model.row_lower
        lp.row_upper_ = model.row_upper
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        g0 = model.a_start[n_x]
        grid_start = model.a_start[n_x:] - g0
        lp.a_matrix_.start_ = np.concatenate(
            [grid_start, grid_start[-1] + np.arange(1, n_g + 1, dtype=np.int32)]
        ).astype(np.int32)
        lp.a_matrix_.index_ = np.concatenate(
            [model.a_index[g0:], np.arange(n_g, dtype=np.int32)]
        ).astype(np.int32)
        lp.a_matrix_.value_ = np.concatenate([model.a_value[g0:], np.ones(n_g)])
        self._h.passModel(lp)

    # ------------------------------------------------------------------ Backend protocol

    def set_objective(self, cost: FloatArray) -> None:  # noqa: D102
        self._cost = cost.astype(np.float64)
        big = max(1e4, 10.0 * self._n_groups) * max(1.0, float(np.abs(cost).max(initial=0.0)))
        self._big = big
        n_g = self._n_groups
        rmp_cost = np.concatenate(
            [cost[self._m.n_x :], np.full(n_g, 0.0 if self._placement else big), self._x_cost()]
        )
        n = len(rmp_cost)
        self._h.changeColsCost(n, np.arange(n, dtype=np.int32), rmp_cost)

    def add_upper_row(self, name: str, coef: FloatArray, upper: float) -> None:  # noqa: D102
        n_x = self._m.n_x
        cols = self._x_cols()
        rmp_coef = np.concatenate([coef[n_x:], np.zeros(self._n_groups), coef[cols]])
        idx = np.flatnonzero(rmp_coef).astype(np.int32)
        self._h.addRow(-math.inf, upper, len(idx), idx, rmp_coef[idx])
        self._h.passRowName(self._h.getNumRow() - 1, name)
        self._row_lower = np.append(self._row_lower, -math.inf)
        self._row_upper = np.append(self._row_upper, upper)
        self._lex.append(coef.astype(np.float64))
        # The last stage placed everything, and later stages keep that solution feasible: the
        # artificial columns are no longer needed (and their big cost would fight the lex rows).
        self._set_artificial_upper(0.0)

    def _set_artificial_upper(self, upper: float) -> None:
        n_g = self._n_groups
        art = np.arange(self._n_grid, self._n_grid + n_g, dtype=np.int32)
        self._h.changeColsBounds(n_g, art, np.zeros(n_g), np.full(n_g, upper))

    def set_complete_rows(self, lower: float) -> None:  # noqa: D102
        n_g = self._n_groups
        self._placement = lower < 1.0
        self._row_lower[:n_g] = lower
        self._h.changeRowsBounds(  # type: ignore[attr-defined]
            n_g, np.arange(n_g, dtype=np.int32), np.full(n_g, lower), np.ones(n_g)
        )
        self._set_artificial_upper(0.0 if self._placement or self._lex else 1.0)

    def run(self, time_limit_s: float) -> RunResult:  # noqa: D102
        res = self._run(time_limit_s)
        self._last_status = res.status
        return res

    def _run(self, time_limit_s: float) -> RunResult:
        started = time.perf_counter()
        if not self._in.any():
            self._add(np.union1d(self._seed(), warm_columns(self._m)))
        self._snapshot = None  # an answer is only taken from a master solved in THIS run
        bound = -math.inf
        for _ in range(_MAX_ROUNDS):
            left = time_limit_s - (time.perf_counter() - started)
            if left <= 0:
                if self._snapshot is None:
                    raise PlanningError(
                        "time limit reached before the master problem was solved; "
                        "raise the time limit or plan fewer batches"
                    )
                return self._result("feasible", "time limit reached while pricing columns", bound)
            self._h.setOptionValue("time_limit", float(left))
            self._h.run()
            status = self._h.getModelStatus()
            if status == highspy.HighsModelStatus.kUnknown:
                status = self._rerun_cold()
            if status == highspy.HighsModelStatus.kTimeLimit:
                if self._h.getInfo().primal_solution_status != 2:  # kSolutionStatusFeasible
                    raise PlanningError(
                        "time limit reached in the master problem without a feasible point; "
                        "raise the time limit or plan fewer batches"
                    )
                self._take_snapshot(self._h.getSolution())
                return self._result("feasible", "time limit reached in the master problem")
            if status != highspy.HighsModelStatus.kOptimal:
                raise PlanningError(
                    f"HiGHS master problem ended with {self._h.modelStatusToString(status)!r}; "
                    "check the fleet and forecasts for extreme values"
                )
            sol = self._h.getSolution()  # one copy per round (highspy copies every vector)
            self._take_snapshot(sol)
            if self._phase_one and self._placed():
                # Everything placed is the most placement can reach: optimal, no more pricing.
                return self._result("optimal", "", -math.inf)
            r = self._reduced_costs(np.asarray(sol.row_dual))
            bound = self._dual_bound(r)
            new = self._price(r)
            if len(new) == 0:
                if self._placement or self._placed():
                    return self._result("optimal", "", bound)
                # Optimal with an unplaced (artificial) share: placement decides.
                if not self._place_all(time_limit_s - (time.perf_counter() - started)):
                    return RunResult("infeasible", None, math.nan, "not every group can be placed")
                continue
            self._purge()
            self._add(new)
        return self._result("feasible", "column generation hit its round limit", bound)

    def _rerun_cold(self) -> highspy.HighsModelStatus:
        """Solve the master again from scratch, with presolve: the warm basis can leave the
        simplex stalled in ``Unknown`` (seen after reservations and lex rows changed the
        master between stages); a cold solve of the same LP settles it."""
        self._h.clearSolver()
        self._h.setOptionValue("presolve", "on")
        try:
            self._h.run()
        finally:
            self._h.setOptionValue("presolve", "off")
        return self._h.getModelStatus()

    def _place_all(self, time_limit_s: float) -> bool:
        """Placement stage: can the full LP place every group? Leaves such cells in the master.

        When it can, the artificial columns stay at zero for the rest of this stage.

        Raises:
            PlanningError: the placement stage stopped early without placing every group.
        """
        cost = self._cost
        self.set_complete_rows(0.0)
        self.set_objective(self._m.objectives[PLACED])
        self._phase_one = True
        try:
            res = self._run(time_limit_s)
        finally:
            self._phase_one = False
            self.set_complete_rows(1.0)
            self.set_objective(cost)
        full = self._placed()
        if full:
            self._set_artificial_upper(0.0)
        elif res.status != "optimal":
            raise PlanningError(
                f"the placement stage stopped early ({res.message}) without placing every "
                "group; raise time_limit_s or plan fewer batches"
            )
        return full

    def restrict_to_optimal_face(self, objective_value: float) -> bool:
        """Keep later stages on the optimal face of the stage just solved (zero tolerance).

        By complementary slackness every optimal solution of the full LP leaves at zero each
        cell whose reduced cost under the optimal duals is positive and keeps tight every row
        whose dual is non-zero; conversely every feasible point with those properties is
        optimal. So instead of a dense ``lex`` row those cells are banned (never priced again)
        and those rows become equalities: the master stays sparse and the next stage
        warm-starts from this basis. Reduced costs within a small share of the objective
        (at most 2e-7 of it over all cells) are treated as zero, so the earlier objective can
        drift by less than its lexicographic slack; the caller checks that anyway.

        Args:
            objective_value: the stage's optimum (same units as its objective).

        Returns:
            False (nothing changed) unless the last run was proven optimal.
        """
        if self._last_status != "optimal" or self._placement:
            return False
        m, h = self._m, self._h
        sol = h.getSolution()
        col_val, col_dual = np.asarray(sol.col_value), np.asarray(sol.col_dual)
        n_grid, off = self._n_grid, self._n_grid + self._n_groups
        grid_val = col_val[:n_grid]
        eps = (2e-7 * max(1.0, abs(objective_value))) / (
            self._n_groups + float(np.abs(grid_val).sum()) + 1.0
        )
        # Cells: banned when their reduced cost is positive and they are unused.
        cols = self._x_cols()
        x_val = np.zeros(m.n_x)
        x_val[cols] = col_val[off:]
        r = self._reduced_costs(np.asarray(sol.row_dual))
        self._banned |= (r > eps) & (x_val <= 1e-9)
        at_one = np.flatnonzero((col_dual[off:] < -eps) & (col_val[off:] >= 1.0 - 1e-9))
        if len(at_one):
            lo_one = np.minimum(col_val[off:][at_one], 1.0)
            h.changeColsBounds(
                len(at_one), (at_one + off).astype(np.int32), lo_one, np.ones(len(at_one))
            )
        self._delete(np.flatnonzero(self._banned[cols]))
        # Grid columns: fixed at 0 or at their cap the same way.
        lo, up = self._grid_lower, self._grid_upper
        zero = (col_dual[:n_grid] > eps) & (grid_val <= 1e-9)
        up[zero] = np.maximum(grid_val[zero], 0.0)
        full = (col_dual[:n_grid] < -eps) & np.isfinite(up) & (grid_val >= up - 1e-9)
        lo[full] = np.minimum(grid_val[full], up[full])
        h.changeColsBounds(n_grid, np.arange(n_grid, dtype=np.int32), lo, up)
        # Rows with a non-zero dual stay at the bound they are on.
        y, act = np.asarray(sol.row_dual), np.asarray(sol.row_value)
        tiny = 1e-12 * max(1.0, float(np.abs(y).max(initial=0.0)))
        lo_r, up_r = self._row_lower, self._row_upper
        near = 1e-7 * np.maximum(1.0, np.abs(act))
        on_up = (y < -tiny) & np.isfinite(up_r) & (act >= up_r - near) & (lo_r < up_r)
        on_lo = (y > tiny) & np.isfinite(lo_r) & (act <= lo_r + near) & (lo_r < up_r)
        # The current point stays exactly feasible (bounds at its activity, not at the limit).
        lo_r[on_up] = np.minimum(act[on_up], up_r[on_up])
        up_r[on_lo] = np.maximum(act[on_lo], lo_r[on_lo])
        rows = np.flatnonzero(on_up | on_lo).astype(np.int32)
        if len(rows):
            h.changeRowsBounds(len(rows), rows, lo_r[rows], up_r[rows])  # type: ignore[attr-defined]
        self._set_artificial_upper(0.0)
        return True

    # ------------------------------------------------------------------ internals

    def _x_cols(self) -> npt.NDArray[np.int64]:
        if not self._rmp_cols:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate(self._rmp_cols)

    def _purge(self) -> None:
        """Drop non-basic cells with a clearly positive reduced cost once the master is large."""
        n_rows = self._h.getNumRow()
        cols = self._x_cols()
        if len(cols) <= _PURGE_ABOVE_PER_ROW * n_rows:
            return
        off = self._n_grid + self._n_groups
        basis = self._h.getBasis()
        status = np.array([int(v) for v in basis.col_status[off:]])
        dual = np.asarray(self._h.getSolution().col_dual)[off:]
        basic = int(highspy.HighsBasisStatus.kBasic)
        scale = max(1.0, float(np.abs(dual).max(initial=0.0)))
        value = np.asarray(self._h.getSolution().col_value)[off:]
        self._delete(np.flatnonzero((status != basic) & (dual > 1e-6 * scale) & (value <= 0.0)))

    def _delete(self, drop: npt.NDArray[np.int64]) -> None:
        """Remove the master's cells at positions ``drop`` (0 = first cell column)."""
        if len(drop) == 0:
            return
        cols = self._x_cols()
        off = self._n_grid + self._n_groups
        self._h.deleteCols(len(drop), (drop + off).astype(np.int32))
        keep = np.ones(len(cols), dtype=bool)
        keep[drop] = False
        self._in[cols[drop]] = False
        self._rmp_cols = [cols[keep]]

    def _x_cost(self) -> FloatArray:
        return self._cost[self._x_cols()]

    def _seed(self) -> npt.NDArray[np.int64]:
        """The cheapest cells of each group under the current objective, and its earliest ones."""
        m = self._m
        # A cell's own cost plus the grid energy it would draw at that site and slot's grid cost
        # (its reduced cost when the grid balance rows are the only binding ones).
        site = np.array([o.site for o in m.col_option], dtype=np.int64)[m.col_gopt]
        grid_col = site * len(m.problem.slots) + m.col_slot
        cost = self._cost[: m.n_x] + m.fac_kwh * self._cost[m.n_x :][grid_col]
        order = np.lexsort((cost, m.col_group))
        rank = _rank_in_group(m.col_group[order])
        cheap = order[rank < _SEED_PER_GROUP]
        early = np.lexsort((m.col_slot, m.col_group))
        first = early[_rank_in_group(m.col_group[early]) < _SEED_PER_GROUP]
        return np.unique(np.concatenate([cheap, first]))

    def _reduced_costs(self, y: FloatArray) -> FloatArray:
        m = self._m
        n_x = m.n_x
        end = m.a_start[n_x]
        contrib = m.a_value[:end] * y[m.a_index[:end]]
        aty = np.add.reduceat(contrib, m.a_start[:n_x]) if n_x else np.zeros(0)
        r = self._cost[:n_x] - aty
        for i, coef in enumerate(self._lex):
            r -= y[m.n_rows + i] * coef[:n_x]
        return r

    def _dual_bound(self, r: FloatArray) -> float:
        """``z + sum min(0, r_j) u_j`` over the cells outside the master (and not banned).

        With the master's optimal duals ``y``, the full LP's dual objective at ``y`` is at least
        the master's optimum ``z`` plus that sum (each cell left out adds its box term; the
        artificial columns' terms, which the full LP lacks, are never positive), so it is a
        lower bound on the full LP's optimum (weak duality).
        """
        neg = np.minimum(r, 0.0)
        u = self._m.col_upper[: self._m.n_x]
        left_out = float(neg @ u)  # all cells, then minus those in the master or banned
        inside = np.flatnonzero(self._in | self._banned)
        left_out -= float(neg[inside] @ u[inside])
        return float(self._h.getInfo().objective_function_value) + left_out

    def _price(self, r: FloatArray) -> npt.NDArray[np.int64]:
        m = self._m
        info = self._h.getInfo()
        tol = 1e-9 * max(1.0, abs(float(info.objective_function_value)))
        cand = np.flatnonzero((r < -tol) & ~self._in & ~self._banned)
        if len(cand) == 0:
            return cand
        order = cand[np.lexsort((r[cand], m.col_group[cand]))]
        keep: npt.NDArray[np.int64] = order[_rank_in_group(m.col_group[order]) < _ADD_PER_GROUP]
        return keep

    def _add(self, cols: npt.NDArray[np.int64]) -> None:
        m = self._m
        cols = cols[~self._in[cols]]
        if len(cols) == 0:
            return
        self._in[cols] = True
        self._rmp_cols.append(cols)
        counts = m.a_start[cols + 1] - m.a_start[cols]
        pos = np.concatenate([np.arange(m.a_start[c], m.a_start[c + 1]) for c in cols])
        index = [m.a_index[pos].astype(np.int32)]
        value = [m.a_value[pos]]
        n_lex = len(self._lex)
        if n_lex:
            # Entries per column: its base rows, then one entry per lex row (rows stay sorted).
            new_counts = counts + n_lex
            new_start = np.concatenate([[0], np.cumsum(new_counts)])
            total = int(new_start[-1])
            idx_all = np.empty(total, dtype=np.int32)
            val_all = np.empty(total)
            base_col = np.repeat(np.arange(len(cols)), counts)
            base_off = np.arange(len(base_col)) - np.repeat(np.cumsum(counts) - counts, counts)
            base_pos = new_start[base_col] + base_off
            idx_all[base_pos] = index[0]
            val_all[base_pos] = value[0]
            for i, coef in enumerate(self._lex):
                lex_pos = new_start[:-1] + counts + i
                idx_all[lex_pos] = m.n_rows + i
                val_all[lex_pos] = coef[cols]
            index, value = [idx_all], [val_all]
            counts = new_counts
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int32)
        idx = index[0].astype(np.int32)
        self._h.addCols(
            len(cols),
            self._cost[cols],
            np.zeros(len(cols)),
            m.col_upper[cols],
            len(idx),
            starts,
            idx,
            value[0],
        )

    def _take_snapshot(self, sol: highspy.HighsSolution) -> None:
        """Keep the master's solution now: adding or deleting cells invalidates HiGHS's."""
        values = np.asarray(sol.col_value, dtype=np.float64)
        self._snapshot = (values, self._x_cols().copy())
        self._snapshot_duals = (
            np.asarray(sol.row_dual, dtype=np.float64)[: self._m.n_rows] if sol.dual_valid else None
        )

    def _placed(self) -> bool:
        """Whether the last snapshot places every group completely (no artificial share)."""
        assert self._snapshot is not None
        sol, cols = self._snapshot
        m, n_grid = self._m, self._n_grid
        x = sol[n_grid + self._n_groups :]
        share = np.bincount(m.col_group[cols], weights=x, minlength=self._n_groups)
        return bool(share.min(initial=1.0) >= _FULL)

    def _result(self, status: str, message: str, bound: float = -math.inf) -> RunResult:
        assert self._snapshot is not None
        sol, cols = self._snapshot
        m, n_grid, n_g = self._m, self._n_grid, self._n_groups
        values = np.zeros(m.n_cols)
        values[m.n_x :] = sol[:n_grid]
        values[cols] = sol[n_grid + n_g :]
        if not self._placement and not self._placed():
            raise PlanningError(
                f"{message}: no complete solution yet; raise time_limit_s or plan fewer batches"
            )
        obj = float(self._cost @ values)
        duals = self._snapshot_duals if status == "optimal" else None
        return RunResult(status, values, obj, message, bound=min(bound, obj), row_duals=duals)


def warm_columns(model: LinearModel) -> npt.NDArray[np.int64]:
    """The model's cell columns of ``problem.warm_cells`` (cells no longer in the model skipped).

    Columns are laid out group by group, option by option, slot by slot (``build_model``), so
    a cell's column is its (group, option) block's first column plus its slot's offset in the
    group's window.
    """
    cells = model.problem.warm_cells
    if not cells or model.n_x == 0:
        return np.zeros(0, dtype=np.int64)
    fleet = model.problem.fleet
    group_of = {b.id: k for k, g in enumerate(model.groups) for b in g.members}
    slot_of = {t: i for i, t in enumerate(model.problem.slots)}
    block_start = np.searchsorted(model.col_gopt, np.arange(len(model.col_option)))
    block: dict[tuple[int, str, str, str], int] = {}
    for j, o in enumerate(model.col_option):
        if block_start[j] >= model.n_x or model.col_gopt[block_start[j]] != j:
            continue  # an option with an empty window has no columns
        site = fleet.sites[o.site]
        key = (int(model.col_group[block_start[j]]), site.name, site.pools[o.pool].name)
        block[(*key, fleet.models[o.model].name)] = j
    cols: list[int] = []
    for batch, site_name, pool_name, model_name, slot in cells:
        k, t = group_of.get(batch), slot_of.get(slot)
        if k is None or t is None:
            continue
        b = block.get((k, site_name, pool_name, model_name))
        g = model.groups[k]
        if b is not None and g.slot_lo <= t < g.slot_hi:
            cols.append(int(block_start[b]) + t - g.slot_lo)
    return np.unique(np.array(cols, dtype=np.int64))


def _rank_in_group(sorted_groups: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Position of each element within its run of equal group ids (input sorted by group)."""
    n = len(sorted_groups)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    run_start = np.repeat(starts, np.diff(np.r_[starts, n]))
    return np.arange(n) - run_start
