"""Invariant: every open batch is in the plan or in ``unplaced``; partial answers are refused."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import pytest
from execution_helpers import T0, chat_line, make_harness
from optimizer_helpers import example_problem
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import Settings
from scheduler.dispatch.replan import default_planner, replan
from scheduler.domain import Plan, PlanStatus
from scheduler.errors import PlanningError
from scheduler.optimizer import plan_problem
from scheduler.optimizer.coverage import check_coverage, coverage_gaps
from scheduler.optimizer.problem import PlanningProblem
from scheduler.store.tables import AssignmentRecord, PlanRecord, Shard

LIMITS_S = (0.002, 0.01, 0.03, 0.1, 0.3)


def test_interrupted_column_generation_never_returns_a_plan_that_loses_batches(
    shared_dir: Path,
) -> None:
    # Given the two-days example (300 batches) on column generation, with per-stage time limits
    # from far too small to enough, and the same as one total budget
    base = example_problem(shared_dir / "examples" / "planning" / "two-days")
    interrupted = 0
    for limit in LIMITS_S:
        for problem in (
            dataclasses.replace(base, time_limit_s=limit),
            dataclasses.replace(base, total_time_limit_s=limit),
        ):
            # When it is planned
            try:
                plan = plan_problem(problem, baselines=False, backend="highs-colgen")
            except PlanningError:
                interrupted += 1
                continue
            # Then an answer is only ever one that covers every batch
            assert coverage_gaps(problem, plan) == []
            interrupted += plan.status is not PlanStatus.OPTIMAL
    # And the limits really interrupted the solver (else this test proves nothing)
    assert interrupted >= 2


def test_coverage_names_a_batch_the_plan_dropped(shared_dir: Path) -> None:
    problem = example_problem(shared_dir / "examples" / "planning" / "tiny")
    plan = plan_problem(problem, baselines=False)
    check_coverage(problem, plan)
    lost = plan.assignments[0].batch
    partial = dataclasses.replace(
        plan, assignments=tuple(a for a in plan.assignments if a.batch != lost)
    )
    with pytest.raises(PlanningError, match=f"1 of {len(problem.batches)} batches.*{lost}"):
        check_coverage(problem, partial)


def _store_state(sessions: sessionmaker[Session]) -> tuple[int | None, dict[str, str]]:
    with sessions() as s:
        current = s.scalars(select(PlanRecord.id).where(PlanRecord.is_current.is_(True))).first()
        shards = {i: st for i, st in s.execute(select(Shard.id, Shard.status))}
    return current, shards


@pytest.mark.parametrize("how", ["time_limit", "partial_answer"])
def test_an_interrupted_replan_stores_and_queues_nothing_of_its_answer(
    settings: Settings, sessions: sessionmaker[Session], tmp_path: Path, how: str
) -> None:
    # Given a current plan for two batches, then five more batches arriving
    h = make_harness(settings, sessions, tmp_path)
    for k in "ab":
        h.submit([chat_line(f"{k}{i}") for i in range(3)], tmp=tmp_path)
    assert h.tick(T0).plan_id is not None
    h.sent.clear()
    for k in "cdefg":
        h.submit([chat_line(f"{k}{i}") for i in range(3)], tmp=tmp_path)
    before = _store_state(sessions)

    def partial(problem: PlanningProblem) -> Plan:
        # what the issue saw: an answer covering some batches, no unplaced entries
        plan = default_planner(problem)
        keep = {b.id for b in problem.batches[:2]}
        return dataclasses.replace(
            plan, assignments=tuple(a for a in plan.assignments if a.batch in keep)
        )

    tight = settings.model_copy(update={"plan_budget_s": 1e-9})
    # When the re-plan is interrupted by its time budget, or its solver answers in part
    with pytest.raises(PlanningError, match="budget|incomplete"):
        replan(
            sessions,
            tight if how == "time_limit" else settings,
            h.fleet,
            T0 + timedelta(minutes=5),
            trigger="new_batch",
            signals_for=h.signals_for,
            planner=None if how == "time_limit" else partial,
        )
    # Then nothing was stored: same current plan, same shards in the same states
    assert _store_state(sessions) == before
    # And the next tick queues only shards of the plan in force
    report = h.tick(T0 + timedelta(minutes=5), allow_replan=False)
    with sessions() as s:
        plan_ids = set(s.scalars(select(Shard.plan_id).where(Shard.id.in_(report.queued))))
        known = set(s.scalars(select(AssignmentRecord.plan_id).distinct()))
    assert plan_ids <= {before[0]} and known == {before[0]}
