"""The model as PuLP variables and named constraints, solved by HiGHS or CBC (readable LPs)."""

from __future__ import annotations

import math

import numpy as np
import pulp

from scheduler.errors import PlanningError
from scheduler.optimizer.backends.base import RunResult
from scheduler.optimizer.model import FloatArray, LinearModel


def highs_available() -> bool:
    """Whether PuLP can reach HiGHS (else ``auto`` falls back to CBC)."""
    return "HiGHS" in pulp.listSolvers(onlyAvailable=True)


class PulpBackend:
    """The same model as PuLP variables and named constraints, solved by HiGHS or CBC."""

    def __init__(self, model: LinearModel, solver: str) -> None:
        """Build PuLP objects in bulk from the model's arrays; ``solver`` is ``highs`` or ``cbc``."""
        self.name = f"pulp-{solver}"
        self._solver = solver
        self._prob = pulp.LpProblem("gridshift", pulp.LpMinimize)
        names = model.col_names()
        # PuLP >= 3.3 attaches variables to the problem; older versions build them directly.
        make_var = getattr(self._prob, "add_variable", pulp.LpVariable)
        self._vars = [
            make_var(n, lowBound=float(lo), upBound=None if math.isinf(up) else float(up))
            for n, lo, up in zip(names, model.col_lower, model.col_upper, strict=True)
        ]
        cols = np.repeat(np.arange(model.n_cols), np.diff(model.a_start))
        order = np.argsort(model.a_index, kind="stable")
        rows, cols, vals = model.a_index[order], cols[order], model.a_value[order]
        bounds = np.searchsorted(rows, np.arange(model.n_rows + 1))
        self._complete: list[pulp.LpConstraint] = []
        self._rows: list[pulp.LpConstraint | None] = []  # model row order; None: an empty row
        for r in range(model.n_rows):
            a, b = bounds[r], bounds[r + 1]
            if a == b:
                self._rows.append(None)
                continue
            expr = pulp.LpAffineExpression(
                [(self._vars[c], float(v)) for c, v in zip(cols[a:b], vals[a:b], strict=True)]
            )
            lo, up = float(model.row_lower[r]), float(model.row_upper[r])
            name = model.row_names[r]
            if lo == up:
                con = pulp.LpConstraint(expr, pulp.LpConstraintEQ, name, up)
            elif math.isinf(lo):
                con = pulp.LpConstraint(expr, pulp.LpConstraintLE, name, up)
            else:
                con = pulp.LpConstraint(expr, pulp.LpConstraintGE, name, lo)
            self._prob += con
            self._rows.append(con)
            if r < len(model.groups):
                self._complete.append(con)

    def _expr(self, coef: FloatArray) -> pulp.LpAffineExpression:
        idx = np.flatnonzero(coef)
        return pulp.LpAffineExpression([(self._vars[i], float(coef[i])) for i in idx])

    def set_objective(self, cost: FloatArray) -> None:  # noqa: D102
        self._prob.setObjective(self._expr(cost))

    def add_upper_row(self, name: str, coef: FloatArray, upper: float) -> None:  # noqa: D102
        self._prob += pulp.LpConstraint(self._expr(coef), pulp.LpConstraintLE, name, upper)

    def set_complete_rows(self, lower: float) -> None:  # noqa: D102
        # Placement stage: "= 1" becomes "<= 1" (x >= 0 keeps the sum non-negative).
        for con in self._complete:
            con.sense = pulp.LpConstraintEQ if lower >= 1.0 else pulp.LpConstraintLE

    def run(self, time_limit_s: float) -> RunResult:  # noqa: D102
        if self._solver == "highs":
            solver = pulp.HiGHS(msg=False, timeLimit=time_limit_s, threads=1)
        else:
            solver = pulp.PULP_CBC_CMD(msg=False, timeLimit=time_limit_s)
        try:
            self._prob.solve(solver)
        except pulp.PulpSolverError as e:
            raise PlanningError(f"{self.name} failed: {e}; try another backend") from e
        status, sol = self._prob.status, self._prob.sol_status
        if status == pulp.LpStatusInfeasible:
            return RunResult("infeasible", None, math.nan, "infeasible")
        if status == pulp.LpStatusOptimal:
            values = np.array([v.varValue or 0.0 for v in self._vars])
            obj = float(pulp.value(self._prob.objective) or 0.0)
            if sol == pulp.LpSolutionOptimal:
                return RunResult("optimal", values, obj, bound=obj, row_duals=self._duals())
            return RunResult("feasible", values, obj, f"{self.name} stopped early")
        raise PlanningError(
            f"{self.name} ended with status {pulp.LpStatus[status]!r}; raise time_limit_s or "
            "check the fleet and forecasts"
        )

    def _duals(self) -> FloatArray | None:
        """The rows' ``pi`` (set by PuLP's HiGHS and CBC interfaces), or None if not set."""
        pis = [0.0 if c is None else c.pi for c in self._rows]
        if any(p is None for p in pis):
            return None
        return np.array(pis, dtype=np.float64)

    def restrict_to_optimal_face(self, objective_value: float) -> bool:
        """Not offered here: the lexicographic loop pins the stage with a ``lex`` row."""
        return False
