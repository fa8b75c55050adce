"""The lexicographic loop over a ``LinearModel`` loaded in a backend (``backends/``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from scheduler.errors import PlanningError
from scheduler.optimizer.backends.base import Backend, RunResult
from scheduler.optimizer.duals import dual_stage
from scheduler.optimizer.model import PLACED, FloatArray, LinearModel, lp_name


@dataclass(frozen=True, slots=True)
class StageOutcome:
    """Optimum (LP value, fixed loads excluded) of one lexicographic stage.

    ``bound`` is the backend's proven lower bound on that optimum (same units and offset):
    ``value`` itself when the stage is optimal, lower when it stopped early, ``-inf`` when the
    backend could prove nothing.
    """

    objective: str
    value: float
    status: str
    bound: float = -math.inf


@dataclass(slots=True)
class LexResult:
    """Outcome of a lexicographic solve; ``values`` is the last stage's solution.

    ``row_duals`` are those of the stage that decides placement (carbon, else the first;
    ``duals.dual_stage``) when that stage ended optimal on a backend with duals.
    """

    status: str
    values: FloatArray | None
    stages: list[StageOutcome] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    row_duals: FloatArray | None = None


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
    explain_stage = dual_stage(objectives)
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
        if i == explain_stage and res.status == "optimal":
            out.row_duals = res.row_duals
        value = float(coef @ res.values)
        offset = model.offsets.get(name, 0.0)
        if res.status != "optimal":
            out.status = "feasible"
            proven = (
                f"; proven lower bound {res.bound - offset:.6g} (value {value - offset:.6g})"
                if math.isfinite(res.bound)
                else ""
            )
            out.notes.append(
                f"stage {i + 1} ({name}) stopped before proving optimality: {res.message}{proven}"
            )
        out.stages.append(StageOutcome(name, value - offset, res.status, res.bound - offset))
        if i < len(objectives) - 1:
            bound = lex_bound(value, tol)
            if tol == 0.0 and res.status == "optimal" and backend.restrict_to_optimal_face(value):
                on_face.append((name, coef, bound))
            else:
                backend.add_upper_row(lp_name("lex", name), coef, bound)
    return out
