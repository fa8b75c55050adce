"""``plan_problem``: placement first, then lexicographic stages, then whole-request extraction."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from contextvars import ContextVar

import numpy as np

from scheduler.domain import Objective, Plan, PlanStatus, PlanTotals, Unplaced
from scheduler.errors import PlanningError
from scheduler.optimizer.aggregate import Candidate, candidates, group_candidates
from scheduler.optimizer.backends import Backend, BudgetedBackend, make_backend
from scheduler.optimizer.duals import binding_rows, dual_stage
from scheduler.optimizer.extract import extract
from scheduler.optimizer.model import HEADROOM, FloatArray, LinearModel, build_model
from scheduler.optimizer.problem import PlanningProblem
from scheduler.optimizer.solve import LexResult, solve_lexicographic, solve_placement

#: ``aggregate=None`` groups interchangeable batches only when the exact LP would exceed this many
#: placement columns (a memory guard): grouping shares placements proportionally, which cost 23 %
#: of delay and saved no time on the 2,000-batch benchmark (docs/optimizer.md).
AGGREGATE_ABOVE_COLUMNS = 4_000_000
_MAX_DROP_ROUNDS = 6
#: ``perf_counter`` deadline of the ``plan_problem`` call in progress (``total_time_limit_s``).
_DEADLINE: ContextVar[float | None] = ContextVar("plan_deadline", default=None)
_MAX_ADD_BACK = 8
_FULL = 1.0 - 1e-6
_LUMPY = (
    "its requests are too large to split into whole requests across the free capacity of its "
    "window; split it into smaller requests, move the deadline later or allow more sites"
)


def plan_problem(
    problem: PlanningProblem,
    *,
    baselines: bool = True,
    aggregate: bool | None = None,
    backend: str = "auto",
) -> Plan:
    """Plan ``problem``: place as much work as possible, then optimise the objectives in order.

    Args:
        problem: the planning instance (pure data; not modified).
        baselines: also compute the contract's ``asap`` and ``carbon_greedy`` baselines.
        aggregate: group interchangeable batches in the LP (``None``: only for large problems).
        backend: ``auto`` (PuLP + HiGHS when small, column generation on highspy when large),
            ``highs-colgen``, ``highs`` (whole LP to highspy), ``pulp-highs`` or ``pulp-cbc``.

    Returns:
        The plan; ``status`` is ``optimal``, ``feasible`` (a time limit stopped a stage) or
        ``infeasible`` (batches were given and none could be placed). Batches that cannot be
        placed are listed in ``unplaced`` with a reason; the rest is still planned.

    Raises:
        PlanningError: no slots, unknown or repeated objectives, tolerances that do not match,
            a missing signal, or a solver failure without a usable answer (e.g. the time limit
            hit before any solution).
    """
    if problem.reserved:
        from scheduler.optimizer.arrivals import with_reserved, without_reserved

        plan = plan_problem(
            with_reserved(problem), baselines=False, aggregate=aggregate, backend=backend
        )
        plan = without_reserved(problem, plan)
        if plan.unplaced:
            # Reservations must never cost real work its place: plan without them too and
            # keep whichever leaves fewer real batches out.
            bare = dataclasses.replace(problem, reserved=())
            alone = plan_problem(bare, baselines=False, aggregate=aggregate, backend=backend)
            if len(alone.unplaced) < len(plan.unplaced):
                plan = dataclasses.replace(
                    alone,
                    notes=(
                        *alone.notes,
                        "the expected arrivals were left out: holding capacity for them would "
                        "have left submitted batches unplaced",
                    ),
                )
        if baselines:
            from scheduler.optimizer.baselines import compute_baselines

            plan = dataclasses.replace(plan, baselines=compute_baselines(problem))
        return plan
    started = time.perf_counter()
    total = problem.total_time_limit_s
    token = _DEADLINE.set(started + total if total is not None else None)
    try:
        return _plan(problem, started, baselines=baselines, aggregate=aggregate, backend=backend)
    finally:
        _DEADLINE.reset(token)


def _plan(
    problem: PlanningProblem,
    started: float,
    *,
    baselines: bool,
    aggregate: bool | None,
    backend: str,
) -> Plan:
    objectives = _check_objectives(problem)
    cands, unplaced = candidates(problem)
    if aggregate is None:
        columns = sum(len(c.options) * (c.slot_hi - c.slot_lo) for c in cands)
        aggregate = columns > AGGREGATE_ABOVE_COLUMNS
    notes: list[str] = []
    lumpy: list[tuple[Candidate, str]] = []
    while True:
        active, dropped, lex, model = _place(problem, cands, aggregate, backend, notes)
        ext = (
            extract(model, lex.values, objectives[0])
            if model and lex and lex.values is not None
            else None
        )
        if ext is None or not ext.overflow:
            break
        # Whole requests cannot fit where the LP's shares did: take those batches out, re-plan.
        out = set(ext.overflow)
        lumpy += [(c, _LUMPY) for c in cands if c.batch.id in out]
        cands = [c for c in cands if c.batch.id not in out]
    unplaced += [Unplaced(c.batch.id, reason) for c, reason in [*dropped, *lumpy]]
    order = {b.id: i for i, b in enumerate(problem.batches)}
    unplaced.sort(key=lambda u: order[u.batch])
    if lex is None or model is None or ext is None:
        status = PlanStatus.OPTIMAL if not problem.batches else PlanStatus.INFEASIBLE
        plan = Plan(
            status=status,
            objectives=problem.objectives,
            tolerances=problem.tolerances,
            totals=PlanTotals(),
            assignments=(),
            unplaced=tuple(unplaced),
            notes=tuple(notes),
        )
    else:
        notes += lex.notes + list(ext.notes)
        if aggregate and len(model.groups) < len(active):
            notes.append(
                f"{len(active)} batches were planned as {len(model.groups)} groups of "
                "interchangeable batches (same window, sites and models)"
            )
        plan = Plan(
            status=PlanStatus.OPTIMAL if lex.status == "optimal" else PlanStatus.FEASIBLE,
            objectives=problem.objectives,
            tolerances=problem.tolerances,
            totals=ext.totals,
            assignments=tuple(
                sorted(
                    ext.assignments, key=lambda a: (order[a.batch], a.slot, a.site, a.pool, a.model)
                )
            ),
            unplaced=tuple(unplaced),
            stage_optima={s.objective: s.value for s in lex.stages},
            notes=tuple(notes),
            duals=(
                binding_rows(problem, model, lex.row_duals, objectives[dual_stage(objectives)])
                if lex.row_duals is not None
                else ()
            ),
        )
    if baselines:
        from scheduler.optimizer.baselines import compute_baselines

        plan = dataclasses.replace(plan, baselines=compute_baselines(problem))
    return dataclasses.replace(plan, solve_s=time.perf_counter() - started)


def _check_objectives(problem: PlanningProblem) -> list[str]:
    if not problem.slots:
        raise PlanningError("the problem has no slots; give forecasts for at least one slot")
    try:
        names = [Objective(o).value for o in problem.objectives]
    except ValueError as e:
        known = ", ".join(o.value for o in Objective)
        raise PlanningError(f"unknown objective in {list(problem.objectives)}; use {known}") from e
    if not names:
        raise PlanningError("no objectives given; use e.g. carbon,cost,delay")
    if len(problem.tolerances) != len(names):
        raise PlanningError(
            f"{len(problem.tolerances)} tolerances for {len(names)} objectives; give one per objective"
        )
    if len(set(names)) != len(names):
        raise PlanningError(
            f"objective order {','.join(names)} repeats an objective; list each once"
        )
    if any(t < 0 or not math.isfinite(t) for t in problem.tolerances):
        raise PlanningError(f"tolerances must be finite and >= 0, got {list(problem.tolerances)}")
    return names


def _load(
    problem: PlanningProblem,
    active: Sequence[Candidate],
    aggregate: bool,
    backend: str,
    headroom: float = 0.0,
) -> tuple[LinearModel, Backend]:
    groups = group_candidates(problem, active, aggregate=aggregate)
    model = build_model(problem, groups, headroom=headroom)
    solver = make_backend(model, backend)
    deadline = _DEADLINE.get()
    return model, (solver if deadline is None else BudgetedBackend(solver, deadline))


def _feasible(
    problem: PlanningProblem, active: Sequence[Candidate], aggregate: bool, backend: str
) -> bool:
    if not active:
        return True
    model, solver = _load(problem, active, aggregate, backend)
    solver.set_objective(np.zeros(model.n_cols))
    return solver.run(problem.time_limit_s).status != "infeasible"


def _place(
    problem: PlanningProblem,
    cands: list[Candidate],
    aggregate: bool,
    backend: str,
    notes: list[str],
) -> tuple[list[Candidate], list[tuple[Candidate, str]], LexResult | None, LinearModel | None]:
    """Solve with every candidate; when that is infeasible, drop the least work that makes it fit."""
    objectives = [Objective(o).value for o in problem.objectives]
    active = list(cands)
    dropped: list[Candidate] = []
    for _ in range(_MAX_DROP_ROUNDS):
        if not active:
            break
        # First with a little headroom for rounding, then at the true limits.
        for headroom in (HEADROOM, 0.0):
            model, solver = _load(problem, active, aggregate, backend, headroom)
            lex = solve_lexicographic(
                solver, model, objectives, problem.tolerances, time_limit_s=problem.time_limit_s
            )
            if lex.status != "infeasible":
                return active, _reasons(problem, dropped, active, aggregate, backend), lex, model
        placed = solve_placement(solver, model, time_limit_s=problem.time_limit_s)
        if placed.values is None:
            raise PlanningError("the placement stage found no solution; raise time_limit_s")
        drop = _drops(model, placed.values)
        drop_ids = {id(b) for b in drop}
        dropped += [c for c in active if id(c.batch) in drop_ids]
        active = [c for c in active if id(c.batch) not in drop_ids]
        if _feasible(problem, active, aggregate, backend):
            active, dropped = _add_back(problem, active, dropped, aggregate, backend)
    else:
        notes.append(
            "placement did not settle; the batches still in conflict are listed as unplaced"
        )
        dropped += active
        active = []
    return active, _reasons(problem, dropped, active, aggregate, backend), None, None


def _drops(model: LinearModel, values: FloatArray) -> list[object]:
    """Members of partly placed groups that do not fit in the group's placed share."""
    share = np.bincount(model.col_group, weights=values[: model.n_x], minlength=len(model.groups))
    out: list[object] = []
    worst, worst_share = None, 2.0
    for k, g in enumerate(model.groups):
        if share[k] >= _FULL:
            continue
        room = share[k] * g.tokens
        for b in sorted(g.members, key=lambda b: -(b.input_tokens + b.output_tokens)):
            tok = b.input_tokens + b.output_tokens
            if tok <= room:
                room -= tok
            else:
                out.append(b)
        if share[k] < worst_share:
            worst, worst_share = g, share[k]
    if not out and worst is not None:
        out = list(worst.members)
    return out


def _add_back(
    problem: PlanningProblem,
    active: list[Candidate],
    dropped: list[Candidate],
    aggregate: bool,
    backend: str,
) -> tuple[list[Candidate], list[Candidate]]:
    """Re-admit dropped batches (smallest first) that still fit with everything else placed."""
    still: list[Candidate] = []
    by_size = sorted(dropped, key=lambda c: c.batch.input_tokens + c.batch.output_tokens)
    for i, c in enumerate(by_size):
        if i < _MAX_ADD_BACK and _feasible(problem, [*active, c], aggregate, backend):
            active = [*active, c]
        else:
            still.append(c)
    return active, still


def _grams(g: float) -> str:
    """Grams as a budget message says them: whole grams from 100 g, else 3 significant digits
    (a cap of 0.02 g read "0 g")."""
    return f"{g:,.0f}" if abs(g) >= 100 else f"{g:.3g}"


def _cap_words(problem: PlanningProblem) -> str:
    """The plan's carbon caps in words: the horizon's, then each capped UTC day's."""
    parts = []
    if problem.carbon_cap_g is not None:
        parts.append(f"{_grams(problem.carbon_cap_g)} g CO2")
    parts += [
        f"{_grams(g)} g CO2 on {day:%Y-%m-%d}"
        for day, g in sorted(problem.carbon_cap_by_day_g.items())
    ]
    return " and ".join(parts)


def _reasons(
    problem: PlanningProblem,
    dropped: list[Candidate],
    active: list[Candidate],
    aggregate: bool,
    backend: str,
) -> list[tuple[Candidate, str]]:
    if not dropped:
        return []
    if problem.carbon_cap_g is not None or problem.carbon_cap_by_day_g:
        uncapped = dataclasses.replace(problem, carbon_cap_g=None, carbon_cap_by_day_g={})
        if _feasible(uncapped, [*active, *dropped], aggregate, backend):
            reason = (
                f"carbon budget: placing it would push the plan over its carbon cap of "
                f"{_cap_words(problem)} even on the smallest allowed models and cleanest "
                "slots; raise the budget, lower min_quality or move the deadline later"
            )
            return [(c, reason) for c in dropped]
    out = []
    for c in dropped:
        b = c.batch
        window = f"{problem.slots[c.slot_lo]:%Y-%m-%dT%H:%MZ} .. {problem.slots[c.slot_hi - 1] + problem.slot_delta:%Y-%m-%dT%H:%MZ}"
        sites = ", ".join(sorted({problem.fleet.sites[o.site].name for o in c.options}))
        if _feasible(problem, [c], aggregate, backend):
            reason = (
                f"not enough capacity in its window ({window}) at its allowed sites ({sites}) "
                "with the other work placed; move the deadline later, allow more sites or "
                "resubmit it after the current work"
            )
        else:
            reason = (
                f"does not fit in its window ({window}) at its allowed sites ({sites}) even "
                f"alone ({b.input_tokens + b.output_tokens:,.0f} tokens, within the pools' GPU-hours and the "
                "sites' water and grid caps); move the deadline later, allow more sites or split it"
            )
        out.append((c, reason))
    return out
