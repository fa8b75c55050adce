"""highspy with the whole model passed as arrays (for comparison and mid-sized models)."""

from __future__ import annotations

import math

import numpy as np

from scheduler.errors import PlanningError
from scheduler.optimizer.backends.base import RunResult
from scheduler.optimizer.model import FloatArray, LinearModel


class HighsBackend:
    """highspy with the model passed as arrays; later stages warm-start from the last basis."""

    name = "highs"

    def __init__(self, model: LinearModel) -> None:
        """Load ``model`` into a fresh HiGHS instance (silent, one thread)."""
        import highspy

        self._hs = highspy
        self._h = highspy.Highs()
        self._h.setOptionValue("output_flag", False)
        self._h.setOptionValue("threads", 1)
        self._n_groups = len(model.groups)
        lp = highspy.HighsLp()
        lp.num_col_ = model.n_cols
        lp.num_row_ = model.n_rows
        lp.col_cost_ = np.zeros(model.n_cols)
        lp.col_lower_ = model.col_lower
        lp.col_upper_ = model.col_upper
        lp.row_lower_ = model.row_lower
        lp.row_upper_ = model.row_upper
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_ = model.a_start
        lp.a_matrix_.index_ = model.a_index
        lp.a_matrix_.value_ = model.a_value
        self._h.passModel(lp)

    def set_objective(self, cost: FloatArray) -> None:  # noqa: D102
        n = len(cost)
        self._h.changeColsCost(n, np.arange(n, dtype=np.int32), cost.astype(np.float64))

    def add_upper_row(self, name: str, coef: FloatArray, upper: float) -> None:  # noqa: D102
        idx = np.flatnonzero(coef).astype(np.int32)
        self._h.addRow(-math.inf, upper, len(idx), idx, coef[idx].astype(np.float64))
        self._h.passRowName(self._h.getNumRow() - 1, name)

    def set_complete_rows(self, lower: float) -> None:  # noqa: D102
        n = self._n_groups
        self._h.changeRowsBounds(  # type: ignore[attr-defined]
            n, np.arange(n, dtype=np.int32), np.full(n, lower), np.ones(n)
        )

    def run(self, time_limit_s: float) -> RunResult:  # noqa: D102
        hs = self._hs
        self._h.setOptionValue("time_limit", float(time_limit_s))
        self._h.run()
        st = self._h.getModelStatus()
        info = self._h.getInfo()
        has_primal = info.primal_solution_status == 2  # kSolutionStatusFeasible
        sol = self._h.getSolution()
        values = np.array(sol.col_value) if has_primal else None
        obj = float(info.objective_function_value)
        text = self._h.modelStatusToString(st)
        if st == hs.HighsModelStatus.kOptimal:
            duals = np.array(sol.row_dual) if sol.dual_valid else None
            return RunResult("optimal", values, obj, bound=obj, row_duals=duals)
        if st == hs.HighsModelStatus.kModelEmpty:
            return RunResult("optimal", np.zeros(0), 0.0, bound=0.0)
        if st in (hs.HighsModelStatus.kInfeasible, hs.HighsModelStatus.kUnboundedOrInfeasible):
            return RunResult("infeasible", None, math.nan, text)
        if values is not None and st in (
            hs.HighsModelStatus.kTimeLimit,
            hs.HighsModelStatus.kIterationLimit,
            hs.HighsModelStatus.kInterrupt,
        ):
            return RunResult("feasible", values, obj, f"HiGHS stopped early: {text}")
        raise PlanningError(
            f"HiGHS ended with status {text!r} and no usable solution; "
            + (
                "raise time_limit_s or plan fewer batches"
                if st == hs.HighsModelStatus.kTimeLimit
                else "check the fleet and forecasts for extreme values"
            )
        )

    def restrict_to_optimal_face(self, objective_value: float) -> bool:
        """Not offered here: the lexicographic loop pins the stage with a ``lex`` row."""
        return False
