"""Lexicographic solving of a ``LinearModel`` with HiGHS (direct or through PuLP) or CBC."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pulp

from scheduler.errors import PlanningError
from scheduler.optimizer.model import PLACED, FloatArray, LinearModel, lp_name
from scheduler.optimizer.quiet import silence_highs_banner

#: Above this many columns ``backend="auto"`` hands the arrays straight to highspy; below it the
#: model goes through PuLP (readable, named variables; the cost is Python objects per term).
PULP_MAX_COLUMNS = 20_000
BACKENDS = ("auto", "highs-colgen", "highs", "pulp-highs", "pulp-cbc")


@dataclass(frozen=True, slots=True)
class RunResult:
    """One solver call: ``optimal``, ``feasible`` (stopped early with a solution), ``infeasible``."""

    status: str
    values: FloatArray | None
    objective: float
    message: str = ""


class Backend(Protocol):
    """What the lexicographic loop needs from a solver holding the model."""

    name: str

    def set_objective(self, cost: FloatArray) -> None:
        """Replace the objective (minimised)."""

    def add_upper_row(self, name: str, coef: FloatArray, upper: float) -> None:
        """Add ``coef . x <= upper`` named ``name``."""

    def set_complete_rows(self, lower: float) -> None:
        """Set the lower bound of every completeness row (upper bound stays 1)."""

    def run(self, time_limit_s: float) -> RunResult:
        """Solve; raise ``PlanningError`` on a solver failure without a usable answer."""


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
        values = np.array(self._h.getSolution().col_value) if has_primal else None
        obj = float(info.objective_function_value)
        text = self._h.modelStatusToString(st)
        if st == hs.HighsModelStatus.kOptimal:
            return RunResult("optimal", values, obj)
        if st == hs.HighsModelStatus.kModelEmpty:
            return RunResult("optimal", np.zeros(0), 0.0)
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
        for r in range(model.n_rows):
            a, b = bounds[r], bounds[r + 1]
            if a == b:
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
                return RunResult("optimal", values, obj)
            return RunResult("feasible", values, obj, f"{self.name} stopped early")
        raise PlanningError(
            f"{self.name} ended with status {pulp.LpStatus[status]!r}; raise time_limit_s or "
            "check the fleet and forecasts"
        )


class BudgetedBackend:
    """A backend whose every ``run`` gets at most what is left of a total time budget.

    ``deadline`` is a ``time.perf_counter()`` value. A run with nothing left raises
    ``PlanningError``: the lexicographic solve then keeps the stages already solved, and a
    first stage (or placement) without an answer fails the whole plan, never a partial one.
    """

    def __init__(self, inner: Backend, deadline: float) -> None:
        self._inner = inner
        self._deadline = deadline

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def set_objective(self, cost: FloatArray) -> None:  # noqa: D102
        self._inner.set_objective(cost)

    def add_upper_row(self, name: str, coef: FloatArray, upper: float) -> None:  # noqa: D102
        self._inner.add_upper_row(name, coef, upper)

    def set_complete_rows(self, lower: float) -> None:  # noqa: D102
        self._inner.set_complete_rows(lower)

    def run(self, time_limit_s: float) -> RunResult:  # noqa: D102
        left = self._deadline - time.perf_counter()
        if left <= 0:
            raise PlanningError(
                "the planning budget (total_time_limit_s) ran out before this solver stage"
            )
        return self._inner.run(min(time_limit_s, left))


def make_backend(model: LinearModel, backend: str = "auto") -> Backend:
    """Load ``model`` into a solver backend.

    ``auto`` uses PuLP with HiGHS for models up to ``PULP_MAX_COLUMNS`` columns and column
    generation on highspy above that (``colgen.py``); PuLP with CBC when HiGHS is not installed.
    ``highs`` passes the whole LP to highspy at once (slower on large models; for comparison).

    Raises:
        PlanningError: an unknown backend name.
    """
    if backend not in BACKENDS:
        raise PlanningError(f"unknown solver backend {backend!r}; use one of {', '.join(BACKENDS)}")
    silence_highs_banner()
    highs_ok = "HiGHS" in pulp.listSolvers(onlyAvailable=True)
    if backend == "auto":
        if not highs_ok:
            backend = "pulp-cbc"
        else:
            backend = "pulp-highs" if model.n_cols <= PULP_MAX_COLUMNS else "highs-colgen"
    if backend == "highs-colgen":
        from scheduler.optimizer.colgen import ColumnGenerationBackend

        return ColumnGenerationBackend(model)
    if backend == "highs":
        return HighsBackend(model)
    return PulpBackend(model, "highs" if backend == "pulp-highs" else "cbc")


@dataclass(frozen=True, slots=True)
class StageOutcome:
    """Optimum (LP value, fixed loads excluded) of one lexicographic stage."""

    objective: str
    value: float
    status: str


@dataclass(slots=True)
class LexResult:
    """Outcome of a lexicographic solve; ``values`` is the last stage's solution."""

    status: str
    values: FloatArray | None
    stages: list[StageOutcome] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def lex_bound(optimum: float, tolerance: float) -> float:
    """Upper bound on an earlier stage's objective: ``f* + tol |f*| + 1e-6 max(1, |f*|)``."""
    return optimum + tolerance * abs(optimum) + 1e-6 * max(1.0, abs(optimum))


def solve_placement(backend: Backend, model: LinearModel, *, time_limit_s: float) -> RunResult:
    """Maximise placed tokens with completeness relaxed to ``<= 1`` (then restore ``= 1``).

    Raises:
        PlanningError: the solver failed without a usable answer.
    """
    backend.set_complete_rows(0.0)
    backend.set_objective(model.objectives[PLACED])
    try:
        return backend.run(time_limit_s)
    finally:
        backend.set_complete_rows(1.0)


def solve_lexicographic(
    backend: Backend,
    model: LinearModel,
    objectives: Sequence[str],
    tolerances: Sequence[float],
    *,
    time_limit_s: float,
) -> LexResult:
    """Minimise each objective in turn, pinning earlier ones with ``lex__<objective>`` rows.

    Returns:
        ``infeasible`` when the first stage has no solution (not everything fits);
        ``optimal`` when every stage was proven optimal; ``feasible`` when a stage stopped at
        its time limit (a later stage that fails keeps the previous stage's solution).

    Raises:
        PlanningError: the solver failed without a usable answer in the first stage.
    """
    out = LexResult(status="optimal", values=None)
    on_face: list[tuple[str, FloatArray, float]] = []  # pinned without a lex row
    for i, (name, tol) in enumerate(zip(objectives, tolerances, strict=True)):
        coef = model.objectives[name]
        backend.set_objective(coef)
        try:
            res = backend.run(time_limit_s)
            if res.values is not None and any(
                c @ res.values > b + 1e-9 * max(1.0, abs(b)) for _, c, b in on_face
            ):
                # The optimal-face restriction let an earlier objective drift past its bound
                # (numerically); pin the earlier stages with their lex rows and solve again.
                for n, c, b in on_face:
                    backend.add_upper_row(lp_name("lex", n), c, b)
                on_face = []
                res = backend.run(time_limit_s)
        except PlanningError:
            if i == 0:
                raise
            res = RunResult("error", None, math.nan)
        if res.status == "infeasible" and i == 0:
            return LexResult(status="infeasible", values=None)
        if res.values is None:
            out.status = "feasible"
            out.notes.append(
                f"stage {i + 1} ({name}) ended without a solution ({res.message or res.status}); "
                "the plan optimises the earlier stages only"
            )
            break
        out.values = res.values
        if res.status != "optimal":
            out.status = "feasible"
            out.notes.append(
                f"stage {i + 1} ({name}) stopped before proving optimality: {res.message}"
            )
        value = float(coef @ res.values)
        out.stages.append(StageOutcome(name, value - model.offsets.get(name, 0.0), res.status))
        if i < len(objectives) - 1:
            bound = lex_bound(value, tol)
            restrict = getattr(backend, "restrict_to_optimal_face", None)
            if tol == 0.0 and res.status == "optimal" and restrict is not None and restrict(value):
                on_face.append((name, coef, bound))
            else:
                backend.add_upper_row(lp_name("lex", name), coef, bound)
    return out
