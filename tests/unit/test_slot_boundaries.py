"""The whole path at slot boundaries, on a pinned clock: intake, plan, tick, worker, finalize,
savings and the budget day, 59 s before an hour, 5 s after it, mid-hour and across midnight UTC.

Every component runs in-process on SQLite and reads gridshift's clock (``scheduler.clock``),
which the test steps: the worker runs each shard 2 s after the tick that sent it. The engine
is ``EchoEngine`` (instant answers): the worker's claim, execution, metering, booking and the
finalizer are the product's own.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from execution_helpers import Harness, chat_line, fixed_signals, make_harness
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from scheduler import clock
from scheduler.config import Settings
from scheduler.dispatch.slots import slot_floor
from scheduler.domain import CarbonBudget
from scheduler.intake.submit import BatchOptions, create_batch
from scheduler.review.savings import savings_view
from scheduler.store.files import save_file
from scheduler.store.tables import Batch, CarbonPacing, LedgerEntry, Shard
from scheduler.store.tenants import create_tenant
from workers.engines.echo import EchoEngine

HOUR = timedelta(hours=1)
INSTANTS = {
    "59s-before-the-hour": datetime(2026, 3, 2, 22, 59, 1, tzinfo=UTC),
    "5s-after-the-hour": datetime(2026, 3, 2, 23, 0, 5, tzinfo=UTC),
    "mid-hour": datetime(2026, 3, 2, 22, 30, tzinfo=UTC),
    "59s-before-midnight": datetime(2026, 3, 2, 23, 59, 1, tzinfo=UTC),
}
#: ``slot-end``: due at the end of the slot in progress (the plan can only run it now);
#: ``24h``: the default window (the plan may wait for a cleaner slot, possibly the next day).
DEADLINES = ("slot-end", "24h")


class SteppedClock:
    """gridshift's clock for the test: reads ``at``, moved only by the test."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def step(self, seconds: float) -> datetime:
        self.at += timedelta(seconds=seconds)
        return self.at


@pytest.fixture
def stepped(request: pytest.FixtureRequest) -> Iterator[SteppedClock]:
    at: datetime = request.param
    stepped = SteppedClock(at)
    with clock.use_clock(stepped):
        yield stepped


def _harness(tmp_path: Path, sessions: sessionmaker[Session], t0: datetime) -> Harness:
    settings = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'g.db'}")
    h = make_harness(settings, sessions, tmp_path, engine_factory=lambda _config: EchoEngine())
    h.fleet = dataclasses.replace(h.fleet, carbon_budget=CarbonBudget(g_per_day=1000.0))
    h.runtime.fleet = h.fleet
    h.signals = signals = fixed_signals(h.fleet, t0)
    h.runtime.signal_lookup = lambda site, slot: (
        (signals[(site, slot)], "synthetic") if (site, slot) in signals else None
    )
    return h


def _submit(h: Harness, tmp: Path, deadline: datetime | None, n: int = 4) -> str:
    """Submit ``n`` chat requests through the real intake, stamped by gridshift's clock."""
    path = tmp / "in.jsonl"
    path.write_text("".join(json.dumps(chat_line(f"r{i}")) + "\n" for i in range(n)))
    with h.sessions() as s, s.begin():
        tenant = create_tenant(s, "acme").id
    with h.sessions() as s:
        f = save_file(
            s, h.settings.files_dir, path, tenant_id=tenant, filename=path.name, purpose="batch"
        )
    options = BatchOptions(
        input_file_id=f.id,
        endpoint="/v1/chat/completions",
        deadline=deadline.isoformat() if deadline else None,
    )
    with h.sessions() as s, s.begin():
        batch = create_batch(s, h.fleet, tenant, options, max_requests=100)
        assert batch.status == "in_progress", batch.errors
        return batch.id


def _shards(h: Harness, batch_id: str) -> list[Shard]:
    with h.sessions() as s:
        return list(s.scalars(select(Shard).where(Shard.batch_id == batch_id)))


@pytest.mark.parametrize("deadline_kind", DEADLINES)
@pytest.mark.parametrize("stepped", INSTANTS.values(), ids=INSTANTS.keys(), indirect=True)
def test_the_whole_path_at_a_slot_boundary(
    tmp_path: Path, sessions: sessionmaker[Session], stepped: SteppedClock, deadline_kind: str
) -> None:
    # Given a batch submitted at the instant (due at the end of the slot in progress, or in 24 h)
    t0 = stepped.at
    in_progress = slot_floor(t0, 60)
    h = _harness(tmp_path, sessions, t0)
    due = in_progress + HOUR if deadline_kind == "slot-end" else None
    batch_id = _submit(h, tmp_path, due)
    with h.sessions() as s:
        batch = s.get(Batch, batch_id)
        assert batch is not None and batch.created_at == int(t0.timestamp())
        deadline = batch.deadline
    # When the dispatcher ticks (and plans) at that instant
    first = h.tick(t0)
    shards = _shards(h, batch_id)
    # Then no shard is planned in a slot that has ended, nor in one starting after the deadline
    assert first.plan_id is not None and shards
    assert all(in_progress <= x.slot_start < deadline for x in shards)
    # and the planning tick sends exactly the shards of the slot in progress
    assert sorted(first.queued) == sorted(x.id for x in shards if x.slot_start == in_progress)
    if deadline_kind == "slot-end":
        assert {x.slot_start for x in shards} == {in_progress}
    # When the worker runs what was sent 2 s later and the dispatcher ticks 1 s after that, slot
    # by slot (ticking at the start of the next planned slot)
    for _ in range(30):
        h.drain(stepped.step(2))
        h.tick(stepped.step(1), allow_replan=False)
        waiting = [x.slot_start for x in _shards(h, batch_id) if x.status == "planned"]
        if not waiting and not h.sent:
            break
        if waiting:
            stepped.at = max(stepped.at, min(waiting))
    end = stepped.at
    # Then the batch completed before its deadline, stamped by the clock
    with h.sessions() as s:
        batch = s.get(Batch, batch_id)
        assert batch is not None and batch.status == "completed", batch.status
        assert batch.request_completed == 4 and batch.request_failed == 0
        assert int(t0.timestamp()) <= (batch.completed_at or 0) <= int(end.timestamp())
        assert (batch.completed_at or 0) <= deadline.timestamp()
        rows = list(s.scalars(select(LedgerEntry).where(LedgerEntry.batch_id == batch_id)))
    # and each shard was booked once, in the slot it was planned for, never before that slot
    planned = {x.id: x.slot_start for x in _shards(h, batch_id)}
    assert sorted(r.shard_id for r in rows) == sorted(planned)
    for r in rows:
        assert planned[r.shard_id] <= r.started_at < planned[r.shard_id] + HOUR
        assert "slot" not in (r.deviations or {}), r.deviations
    # and the savings view shows the batch with what ran and the plan's baselines
    with h.sessions() as s:
        view = savings_view(s, t0 - timedelta(days=1), end + timedelta(days=1))
    row = {x.key: x for x in view.per_batch}[batch_id]
    assert row.actual.energy_kwh > 0 and row.asap is not None
    # When the dispatcher ticks after the next hour (and the next UTC day when it is the same)
    after = slot_floor(end, 60) + HOUR + timedelta(seconds=5)
    h.tick(after)
    # Then the pacer has closed every UTC day the run touched, one row per day
    with h.sessions() as s:
        days = list(s.scalars(select(CarbonPacing.day).where(CarbonPacing.scope == "fleet")))
    first_day, last_day = t0.date(), after.date()
    expected = [
        (first_day + timedelta(days=i)).isoformat() for i in range((last_day - first_day).days + 1)
    ]
    assert sorted(days) == expected
    assert len(expected) == 1 + (after.date() > t0.date())


@pytest.mark.parametrize("tick_first", [True, False], ids=["tick-first", "worker-first"])
def test_work_sent_in_the_last_seconds_before_its_deadline_expires_whichever_comes_first(
    tmp_path: Path, sessions: sessionmaker[Session], tick_first: bool
) -> None:
    # Given a batch due at the end of the slot in progress, planned and sent 2 s before it ends
    t0 = datetime(2026, 3, 2, 22, 59, 58, tzinfo=UTC)
    stepped = SteppedClock(t0)
    with clock.use_clock(stepped):
        h = _harness(tmp_path, sessions, t0)
        batch_id = _submit(h, tmp_path, slot_floor(t0, 60) + HOUR)
        assert h.tick(t0).queued
        # When the worker picks the shard up 3 s after the deadline, before or after the
        # dispatcher's next tick
        stepped.step(5)
        if tick_first:
            h.tick(stepped.at, allow_replan=False)
        outcomes = h.drain(stepped.at)
        h.tick(stepped.step(1), allow_replan=False)
    # Then no attempt started past the deadline and the batch expired, every request in the
    # error file, either way (the worker used to run it and complete the batch late)
    assert [o.status for o in outcomes] == ["skipped"]
    with h.sessions() as s:
        batch = s.get(Batch, batch_id)
        assert batch is not None and batch.status == "expired"
        assert (batch.request_completed, batch.request_failed) == (0, 4)
        assert batch.expired_at is not None and batch.expired_at >= batch.deadline.timestamp()
        assert not list(s.scalars(select(LedgerEntry)))


def test_a_worker_finishing_as_the_hour_turns_stamps_the_instant_it_finished_at(
    tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    # Given a batch due at the end of the slot in progress, sent 30 s before it ends
    t0 = datetime(2026, 3, 2, 22, 59, 30, tzinfo=UTC)
    stepped = SteppedClock(t0)
    with clock.use_clock(stepped):
        h = _harness(tmp_path, sessions, t0)
        batch_id = _submit(h, tmp_path, slot_floor(t0, 60) + HOUR)
        assert h.tick(t0).queued
        # When the worker's run ends 1 s before the deadline and its finalizer's transaction
        # commits 1 s after it (the process clock has moved on)
        finished = datetime(2026, 3, 2, 22, 59, 59, tzinfo=UTC)
        stepped.at = finished + timedelta(seconds=2)
        assert [o.status for o in h.drain(finished)] == ["done"]
    # Then the batch completed at the instant the worker decided it had, within its deadline
    # (the finalizer used to stamp the process clock's later reading: completed after its
    # deadline)
    with h.sessions() as s:
        batch = s.get(Batch, batch_id)
        assert batch is not None and batch.status == "completed"
        assert batch.completed_at == int(finished.timestamp()) < batch.deadline.timestamp()
