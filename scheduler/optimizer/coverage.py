"""The plan invariant: every batch of the problem is fully planned or listed as unplaced."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from scheduler.domain import Plan
from scheduler.errors import PlanningError
from scheduler.optimizer.problem import PlanningProblem


@dataclass(frozen=True, slots=True)
class CoverageGap:
    """A batch the plan lost: ``planned`` of its ``requests`` requests are in assignments."""

    batch: str
    requests: int
    planned: int


def coverage_gaps(problem: PlanningProblem, plan: Plan) -> list[CoverageGap]:
    """Batches neither fully placed (all requests in assignments) nor listed in ``unplaced``.

    Also lists a batch placed in part or placed more than once, and any assignment of a batch
    the problem does not hold (``requests=0``). An empty list means the invariant holds.
    """
    placed: dict[str, int] = defaultdict(int)
    for a in plan.assignments:
        placed[a.batch] += a.requests
    unplaced = {u.batch for u in plan.unplaced}
    gaps = [
        CoverageGap(b.id, b.requests, placed.get(b.id, 0))
        for b in problem.batches
        if b.id not in unplaced and placed.get(b.id, 0) != b.requests
    ]
    known = {b.id for b in problem.batches}
    gaps += [CoverageGap(k, 0, n) for k, n in placed.items() if k not in known]
    return gaps


def check_coverage(problem: PlanningProblem, plan: Plan) -> None:
    """Raise ``PlanningError`` unless every batch is fully planned or unplaced with a reason.

    Raises:
        PlanningError: names how many batches the plan would lose and the first few of them.
    """
    gaps = coverage_gaps(problem, plan)
    if not gaps:
        return
    shown = ", ".join(f"{g.batch} ({g.planned} of {g.requests} requests)" for g in gaps[:5])
    raise PlanningError(
        f"the plan is incomplete: {len(gaps)} of {len(problem.batches)} batches are neither "
        f"fully planned nor listed as unplaced (e.g. {shown}); it was not accepted"
    )
