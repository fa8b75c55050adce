"""The planner's context rule: a piece never runs on a model whose context it exceeds."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from optimizer_helpers import BIG, SMALL, batch, fleet, problem, site

from scheduler.contract import read_batches
from scheduler.domain import BudgetState, Plan, PlanningBatch
from scheduler.errors import InvalidInput
from scheduler.optimizer import plan_problem
from scheduler.optimizer.aggregate import allowed_models
from scheduler.optimizer.budget import restrict_batch
from scheduler.optimizer.problem import PlanningProblem
from scheduler.optimizer.validate import validate_plan

# small (quality 0.5) holds 1,024 tokens; big (0.9) 8,192
FLEET = fleet(
    [site("a", gpus=4)], models=[{**SMALL, "context_tokens": 1024}, {**BIG, "context_tokens": 8192}]
)


def _plan(p: PlanningProblem) -> Plan:
    plan = plan_problem(p, baselines=False)
    report = validate_plan(p, plan)
    assert report.ok, report.violations
    return plan


def _auto(need: int | None) -> PlanningBatch:
    return dataclasses.replace(batch("x", min_quality=0.5), max_request_tokens=need)


def test_an_auto_piece_too_long_for_the_small_model_runs_on_the_wide_one() -> None:
    # Given carbon first: the small model is the cleaner choice for an auto batch
    short = _plan(problem(FLEET, {"a": [100.0] * 3}, [_auto(1000)]))
    assert {a.model for a in short.assignments} == {"small"}
    # When its largest request needs 2,000 tokens of context
    p = problem(FLEET, {"a": [100.0] * 3}, [_auto(2000)])
    # Then only the big model is allowed and every piece runs there
    assert [FLEET.models[i].name for i in allowed_models(p, p.batches[0])] == ["big"]
    plan = _plan(p)
    assert plan.assignments and {a.model for a in plan.assignments} == {"big"}
    assert not plan.unplaced


def test_a_piece_too_long_for_every_allowed_model_is_unplaced_with_the_reason() -> None:
    named = dataclasses.replace(batch("named", model="small"), max_request_tokens=2000)
    auto = _auto(9000)
    plan = _plan(problem(FLEET, {"a": [100.0] * 3}, [named, auto]))
    assert not plan.assignments
    reasons = {u.batch: u.reason for u in plan.unplaced}
    assert "needs at least 2000 tokens of context but model 'small' has 1024" in reasons["named"]
    assert "needs at least 9000 tokens of context and no model with quality" in reasons["x"]


def test_a_model_without_context_tokens_and_an_unknown_need_are_not_restricted() -> None:
    plain = fleet([site("a")], models=[SMALL])
    p = problem(plain, {"a": [100.0]}, [dataclasses.replace(batch("x"), max_request_tokens=10**6)])
    assert _plan(p).assignments
    assert _plan(problem(FLEET, {"a": [100.0]}, [_auto(None)])).assignments


def test_a_budget_never_pins_an_auto_piece_to_a_model_too_short_for_it() -> None:
    # CRITICAL keeps only the smallest qualifying model, unless the piece does not fit it
    assert restrict_batch(_auto(500), BudgetState.CRITICAL, FLEET.models).model == "small"
    assert restrict_batch(_auto(2000), BudgetState.CRITICAL, FLEET.models).model == "big"


def test_batches_jsonl_may_carry_max_request_tokens(tmp_path: Path) -> None:
    line = {
        "id": "b",
        "min_quality": 0.5,
        "requests": 1,
        "input_tokens": 10,
        "output_tokens": 10,
        "submitted_at": "2026-11-22T00:00:00Z",
        "deadline": "2026-11-23T00:00:00Z",
    }
    path = tmp_path / "batches.jsonl"
    path.write_text(
        json.dumps({**line, "max_request_tokens": 2000})
        + "\n"
        + json.dumps({**line, "id": "c"})
        + "\n"
    )
    assert [b.max_request_tokens for b in read_batches(path)] == [2000, None]
    path.write_text(json.dumps({**line, "max_request_tokens": "2k"}) + "\n")
    with pytest.raises(InvalidInput, match="max_request_tokens must be a whole number"):
        read_batches(path)
