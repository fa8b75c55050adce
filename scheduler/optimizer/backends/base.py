"""What every solver backend offers the lexicographic loop: ``RunResult`` and ``Backend``."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Protocol

from scheduler.errors import PlanningError
from scheduler.optimizer.model import FloatArray


@dataclass(frozen=True, slots=True)
class RunResult:
    """One solver call: ``optimal``, ``feasible`` (stopped early with a solution), ``infeasible``.

    ``bound`` is a proven lower bound on the optimum of the problem solved (minimisation):
    equal to ``objective`` when the run is optimal, below it when a backend stopped early and
    can still prove how far it can be from the optimum, ``-inf`` when nothing is proven.
    ``row_duals`` are the duals of the model's rows in ``LinearModel.row_names`` order (rows
    added later, e.g. ``lex``, may follow) when the backend has them for an optimal run, as the
    solver reports them (a binding ``<=`` row of a minimisation: negative); else ``None``.
    """

    status: str
    values: FloatArray | None
    objective: float
    message: str = ""
    bound: float = -math.inf
    row_duals: FloatArray | None = None


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

    def restrict_to_optimal_face(self, objective_value: float) -> bool:
        """Keep later stages on the last stage's optimal face without a dense row.

        The optimal-face capability: a backend that cannot do it returns False, and the
        lexicographic loop pins the stage with a ``lex`` row instead.
        """


class BudgetedBackend:
    """A backend whose every ``run`` gets at most what is left of a total time budget.

    ``deadline`` is a ``time.perf_counter()`` value. A run with nothing left raises
    ``PlanningError``: the lexicographic solve then keeps the stages already solved, and a
    first stage (or placement) without an answer fails the whole plan, never a partial one.
    """

    def __init__(self, inner: Backend, deadline: float) -> None:
        self._inner = inner
        self._deadline = deadline
        self.name = inner.name

    def set_objective(self, cost: FloatArray) -> None:  # noqa: D102
        self._inner.set_objective(cost)

    def add_upper_row(self, name: str, coef: FloatArray, upper: float) -> None:  # noqa: D102
        self._inner.add_upper_row(name, coef, upper)

    def set_complete_rows(self, lower: float) -> None:  # noqa: D102
        self._inner.set_complete_rows(lower)

    def restrict_to_optimal_face(self, objective_value: float) -> bool:  # noqa: D102
        return self._inner.restrict_to_optimal_face(objective_value)

    def run(self, time_limit_s: float) -> RunResult:  # noqa: D102
        left = self._deadline - time.perf_counter()
        if left <= 0:
            raise PlanningError(
                "the planning budget (total_time_limit_s) ran out before this solver stage"
            )
        return self._inner.run(min(time_limit_s, left))
