"""Expected arrivals in the service: reservations from the store's history, never shards."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from execution_helpers import T0, Harness, chat_line, fixed_signals
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import Settings
from scheduler.dispatch.expected import expected_arrivals, received
from scheduler.dispatch.replan import build_problem, replan
from scheduler.optimizer.arrivals import is_reservation
from scheduler.samples import load_sample_fleet
from scheduler.store.tables import AssignmentRecord, PlanRecord, Shard


def _harness(tmp_path: Path, sessions: sessionmaker[Session], **kw: object) -> Harness:
    settings = Settings(
        data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'g.db'}", **kw
    )
    fleet = load_sample_fleet()
    return Harness(settings, sessions, fleet, None, fixed_signals(fleet, T0 - timedelta(hours=1)))  # type: ignore[arg-type]


def test_yesterdays_batch_is_reserved_tonight_and_never_becomes_a_shard(
    tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    # Given a batch received yesterday at 02:30 with a 6 h window, and one received now
    h = _harness(tmp_path, sessions)
    yesterday = h.submit(
        [chat_line(f"y{i}") for i in range(4)], now=T0 - timedelta(hours=23), window="6h",
        tmp=tmp_path,
    )  # fmt: skip
    today = h.submit([chat_line(f"t{i}") for i in range(3)], now=T0, tmp=tmp_path)
    now = T0 + timedelta(minutes=5)
    # When the service builds tonight's problem
    with h.sessions() as s:
        history = received(s, now - timedelta(days=7), now)
        problem, _, _ = build_problem(s, h.settings, h.fleet, now, h.signals_for)
    # Then both batches are history, and yesterday's is expected again 24 h after it arrived,
    # weighted 1/7 (one day of seven)
    assert {b.id.split("~")[0] for b in history} == {yesterday, today}
    assert problem is not None and problem.reserved
    first = min(problem.reserved, key=lambda r: r.submitted_at)
    assert first.submitted_at == T0 + timedelta(hours=1, minutes=30)  # 02:30 + 24 h -> slot 03:00
    assert all(is_reservation(r.id) for r in problem.reserved)
    assert {b.id.split("~")[0] for b in problem.batches} == {today}  # yesterday's is past due
    # When it re-plans
    plan_id = replan(
        h.sessions, h.settings, h.fleet, now, trigger="manual", signals_for=h.signals_for
    )
    # Then the plan says what it held, and no assignment or shard is a reservation
    with h.sessions() as s:
        record = s.get(PlanRecord, plan_id)
        parts = set(
            s.scalars(select(AssignmentRecord.part_id).where(AssignmentRecord.plan_id == plan_id))
        )
        shard_parts = set(s.scalars(select(Shard.part_id)))
    assert record is not None
    assert any("expected arrivals" in n for n in record.notes)
    assert parts and not any(is_reservation(p) for p in parts)
    assert not any(is_reservation(p) for p in shard_parts)


def test_reservations_are_off_with_no_history_days_or_no_scale(
    tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    h = _harness(tmp_path, sessions)
    h.submit([chat_line("y")], now=T0 - timedelta(hours=23), window="6h", tmp=tmp_path)
    now = T0 + timedelta(minutes=5)
    end = now + timedelta(hours=48)
    with h.sessions() as s:
        on = expected_arrivals(s, h.settings, now, end, 60)
        off = expected_arrivals(
            s, h.settings.model_copy(update={"arrival_history_days": 0}), now, end, 60
        )
        none = expected_arrivals(
            s, h.settings.model_copy(update={"arrival_reserve": 0.0}), now, end, 60
        )
    assert on and off == () and none == ()
