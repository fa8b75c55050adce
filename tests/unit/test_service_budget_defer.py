"""At a CRITICAL carbon budget the service defers auto work that can wait past the horizon."""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta
from pathlib import Path

from execution_helpers import T0, Harness, book_co2, chat_line, fixed_signals
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import Settings
from scheduler.dispatch.budget import DEFERRED_REASON_PREFIX
from scheduler.domain import CarbonBudget, Fleet
from scheduler.intake.submit import BatchOptions, create_batch
from scheduler.samples import load_sample_fleet
from scheduler.store.files import save_file
from scheduler.store.tables import AssignmentRecord, PlanRecord, Shard
from scheduler.store.tenants import create_tenant

DAY_G = 1000.0
HORIZON_H = 12


def _harness(tmp_path: Path, sessions: sessionmaker[Session]) -> Harness:
    fleet: Fleet = dataclasses.replace(
        load_sample_fleet(), carbon_budget=CarbonBudget(g_per_day=DAY_G)
    )
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'g.db'}",
        horizon_hours=HORIZON_H,
    )
    return Harness(settings, sessions, fleet, None, fixed_signals(fleet, T0))  # type: ignore[arg-type]


def _submit(h: Harness, tmp: Path, name: str, *, model: str, window: str) -> str:
    """A 2-request batch naming ``model`` (``"auto"``: min_quality 0.4); returns its id."""
    path = tmp / f"{name}.jsonl"
    path.write_text("".join(json.dumps(chat_line(f"r{i}", model=model)) + "\n" for i in range(2)))
    with h.sessions() as s:
        tenant_id = create_tenant(s, name).id
        s.commit()
    with h.sessions() as s:
        f = save_file(
            s, h.settings.files_dir, path, tenant_id=tenant_id, filename=path.name, purpose="batch"
        )
    opts = BatchOptions(
        input_file_id=f.id,
        endpoint="/v1/chat/completions",
        completion_window=window,
        min_quality=0.4 if model == "auto" else None,
    )
    with h.sessions() as s, s.begin():
        b = create_batch(s, h.fleet, tenant_id, opts, max_requests=1000, now=int(T0.timestamp()))
        assert b.status == "in_progress", b.errors
        return b.id


def test_critical_budget_defers_only_auto_work_whose_deadline_is_past_the_horizon(
    tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    # Given 95 % of today's budget spent (CRITICAL), a 12 h horizon and three batches
    h = _harness(tmp_path, sessions)
    book_co2(h, T0 - timedelta(minutes=30), 0.95 * DAY_G)
    waits = _submit(h, tmp_path, "patient", model="auto", window="72h")
    urgent = _submit(h, tmp_path, "urgent", model="auto", window="6h")
    named = _submit(h, tmp_path, "named", model="tiny-chat", window="72h")
    # When the tick plans
    report = h.tick(T0)
    # Then the patient auto batch is left out of the plan: no assignment, no shard
    assert report.trigger == "new_batch" and report.plan_id is not None
    with h.sessions() as s:
        plan = s.get(PlanRecord, report.plan_id)
        assert plan is not None
        planned = set(
            s.scalars(select(AssignmentRecord.batch_id).where(AssignmentRecord.plan_id == plan.id))
        )
        sharded = set(s.scalars(select(Shard.batch_id)))
    assert waits not in planned and waits not in sharded
    # and it is listed as deferred in the plan's unplaced, with the share of budget left
    deferred = [u for u in plan.unplaced if u["reason"].startswith(DEFERRED_REASON_PREFIX)]
    assert [u["batch"].split("~", 1)[0] for u in deferred] == [waits]
    assert "CRITICAL (5 % left)" in deferred[0]["reason"]
    # while the urgent auto batch and the named-model batch are planned
    assert {urgent, named} <= planned
    assert "carbon budget state (fleet): critical" in (plan.notes or [])


def test_a_deferred_part_does_not_make_the_next_tick_in_the_same_slot_replan(
    tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    # Given a CRITICAL budget and a plan that deferred a patient auto batch
    h = _harness(tmp_path, sessions)
    book_co2(h, T0 - timedelta(minutes=30), 0.95 * DAY_G)
    _submit(h, tmp_path, "patient", model="auto", window="72h")
    first = h.tick(T0)
    assert first.plan_id is not None
    # When the dispatcher ticks again within the same slot
    again = h.tick(T0 + timedelta(minutes=10))
    # Then it does not re-plan
    assert again.trigger is None and again.plan_id is None
    # But at the next slot boundary it re-plans (and defers again while still CRITICAL)
    boundary = h.tick(T0 + timedelta(minutes=31))
    assert boundary.trigger == "slot_boundary" and boundary.plan_id is not None
    with h.sessions() as s:
        plan = s.get(PlanRecord, boundary.plan_id)
        assert plan is not None
    assert [u["reason"].startswith(DEFERRED_REASON_PREFIX) for u in plan.unplaced] == [True]
