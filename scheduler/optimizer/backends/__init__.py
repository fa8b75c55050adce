"""Solver backends behind one protocol (``base``): HiGHS direct, PuLP, column generation.

``make_backend`` is the one place that picks and loads a backend; ``solve.py`` only runs the
lexicographic loop over whatever it returns.
"""

from __future__ import annotations

from scheduler.errors import PlanningError
from scheduler.optimizer.backends.base import Backend, BudgetedBackend, RunResult
from scheduler.optimizer.backends.colgen import ColumnGenerationBackend
from scheduler.optimizer.backends.highs import HighsBackend
from scheduler.optimizer.backends.pulp import PulpBackend, highs_available
from scheduler.optimizer.model import LinearModel
from scheduler.optimizer.quiet import silence_highs_banner

__all__ = [
    "BACKENDS",
    "PULP_MAX_COLUMNS",
    "Backend",
    "BudgetedBackend",
    "ColumnGenerationBackend",
    "HighsBackend",
    "PulpBackend",
    "RunResult",
    "make_backend",
]

#: Above this many columns ``backend="auto"`` uses column generation on highspy; below it the
#: model goes through PuLP (readable, named variables; the cost is Python objects per term).
PULP_MAX_COLUMNS = 20_000
BACKENDS = ("auto", "highs-colgen", "highs", "pulp-highs", "pulp-cbc")


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
    highs_ok = highs_available()
    if backend == "auto":
        if not highs_ok:
            backend = "pulp-cbc"
        else:
            backend = "pulp-highs" if model.n_cols <= PULP_MAX_COLUMNS else "highs-colgen"
    if backend == "highs-colgen":
        return ColumnGenerationBackend(model)
    if backend == "highs":
        return HighsBackend(model)
    return PulpBackend(model, "highs" if backend == "pulp-highs" else "cbc")
