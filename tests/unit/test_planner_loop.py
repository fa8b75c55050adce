"""The planner loop off the dispatch path: ticks never wait on a solve; failures keep the plan."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from execution_helpers import T0, Harness, chat_line, fixed_signals, make_harness
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import Settings
from scheduler.dispatch.planner_loop import PlannerLock, PlannerLoop, SignalCache
from scheduler.dispatch.replan import default_planner
from scheduler.domain import Plan
from scheduler.errors import PlanningError
from scheduler.optimizer.problem import PlanningProblem
from scheduler.store.tables import AssignmentRecord, BatchRequest, PlanRecord, Shard

CLEAN_SLOT = T0.replace(minute=0) + timedelta(hours=3)


def _harness(settings: Settings, sessions: sessionmaker[Session], tmp: Path) -> Harness:
    """Sample fleet; the grid is dirty everywhere except at CLEAN_SLOT, so work waits for it."""
    h = make_harness(
        settings.model_copy(update={"planner_debounce_s": 0.0, "planner_retry_s": 0.01}),
        sessions,
        tmp,
    )
    h.signals = {
        k: dataclasses.replace(
            v,
            carbon_g_per_kwh=5.0 if k[1] == CLEAN_SLOT else 900.0,
            price_per_kwh=0.01 if k[1] == CLEAN_SLOT else 0.5,
            renewable_kw=0.0,
        )
        for k, v in h.signals.items()
    }
    return h


def _loop(h: Harness, now: datetime, planner: Callable[[PlanningProblem], Plan]) -> PlannerLoop:
    return PlannerLoop(
        h.sessions,
        h.settings,
        h.fleet,
        signals_for=h.signals_for,
        planner=planner,
        clock=lambda: now,
    )


def _shards(h: Harness, batch_id: str) -> list[Shard]:
    with h.sessions() as s:
        return list(s.scalars(select(Shard).where(Shard.batch_id == batch_id)))


def test_due_shards_are_queued_within_one_tick_while_a_replan_runs(
    settings: Settings, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    # Given batch A planned (inline, as `dispatch --once` does) into the clean slot three hours on
    h = _harness(settings, sessions, tmp_path)
    a = h.submit([chat_line(f"a{i}") for i in range(3)], tmp=tmp_path)
    assert h.tick(T0).plan_id is not None
    planned = _shards(h, a)
    assert planned and {sh.status for sh in planned} == {"planned"}
    assert {sh.slot_start for sh in planned} == {CLEAN_SLOT}
    # And, once that slot has started, batch B arrives and the planner starts a slow re-plan
    now = CLEAN_SLOT + timedelta(minutes=1)
    b = h.submit([chat_line(f"b{i}") for i in range(2)], now=now, tmp=tmp_path)
    entered, release = threading.Event(), threading.Event()

    def slow_planner(problem: PlanningProblem) -> Plan:
        entered.set()
        assert release.wait(60), "the test never released the solve"
        return default_planner(problem)

    loop = _loop(h, now, slow_planner)
    result: list[int | None] = []
    worker = threading.Thread(target=lambda: result.append(loop.step()))
    worker.start()
    try:
        assert entered.wait(30), "the planner never reached the solver"
        # When the dispatcher ticks while the solve is still running
        started = time.perf_counter()
        report = h.tick(now, allow_replan=False)
        elapsed = time.perf_counter() - started
        still_solving = worker.is_alive()
    finally:
        release.set()
        worker.join(60)
    # Then A's due shards were queued by that tick, well within one tick period
    assert still_solving
    assert sorted(report.queued) == sorted(sh.id for sh in planned)
    assert elapsed < h.settings.tick_s
    # And the re-plan then published a new version holding B, without touching A's queued shards
    assert result and result[0] is not None
    with h.sessions() as s:
        current = s.scalars(select(PlanRecord).where(PlanRecord.is_current.is_(True))).one()
        assert current.id == result[0] and current.trigger == "new_batch"
        parts = set(
            s.scalars(
                select(AssignmentRecord.part_id).where(AssignmentRecord.plan_id == current.id)
            )
        )
        assert any(p.startswith(b) for p in parts)
        for sh in planned:
            row = s.get(Shard, sh.id)
            assert row is not None and row.status == "queued"
            held = s.scalar(
                select(func.count()).select_from(BatchRequest).where(BatchRequest.shard_id == sh.id)
            )
            assert held == sh.request_count
    assert {sh.status for sh in _shards(h, b)} == {"planned"}


def test_a_failed_replan_keeps_the_current_plan_in_force_and_is_recorded(
    settings: Settings, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    # Given a current plan for batch A
    h = _harness(settings, sessions, tmp_path)
    a = h.submit([chat_line(f"a{i}") for i in range(3)], tmp=tmp_path)
    first = h.tick(T0).plan_id
    before = {sh.id for sh in _shards(h, a)}
    # When batch B arrives and the solver fails
    b = h.submit([chat_line("b0")], tmp=tmp_path)

    def failing(problem: PlanningProblem) -> Plan:
        raise PlanningError("HiGHS ended with status 'Time limit reached' and no usable solution")

    loop = _loop(h, T0, failing)
    # Then the step reports nothing new, and the failure is a stored 'failed' version
    assert loop.step() is None
    assert loop.state.failures and "Time limit" in loop.state.failures[0]
    with h.sessions() as s:
        current = s.scalars(select(PlanRecord).where(PlanRecord.is_current.is_(True))).one()
        failed = s.scalars(select(PlanRecord).where(PlanRecord.status == "failed")).one()
    assert current.id == first
    assert failed.trigger == "new_batch" and "stays in force" in (failed.notes or [""])[0]
    assert {sh.id for sh in _shards(h, a)} == before
    assert _shards(h, b) == []
    # And the dispatcher keeps queuing A's work when its slot comes
    report = h.tick(CLEAN_SLOT, allow_replan=False)
    assert sorted(report.queued) == sorted(before)
    # And after the retry delay a working planner plans B
    time.sleep(0.02)
    loop.planner = default_planner
    assert loop.step() is not None
    assert _shards(h, b)


def test_replanning_an_unchanged_store_keeps_every_shard_and_request_row(
    settings: Settings, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    # Given two batches planned once
    h = _harness(settings, sessions, tmp_path)
    ids = [h.submit([chat_line(f"{k}{i}") for i in range(4)], tmp=tmp_path) for k in "ab"]
    h.tick(T0)
    before = {sh.id: sh.request_count for i in ids for sh in _shards(h, i)}
    # When the planner re-plans the same work one slot later (nothing moved)
    loop = _loop(h, T0 + timedelta(hours=1), default_planner)
    assert loop.trigger(T0 + timedelta(hours=1)) == "slot_boundary"
    plan_id = loop.step()
    # Then the shards are the same rows, re-pointed at the new version; no request row rewritten
    after = {sh.id: sh for i in ids for sh in _shards(h, i)}
    assert set(after) == set(before)
    assert {sh.plan_id for sh in after.values()} == {plan_id}
    with h.sessions() as s:
        notes = s.get(PlanRecord, plan_id).notes  # type: ignore[union-attr]
    assert any("0 new shards" in n and "0 request rows" in n for n in notes or []), notes


def test_a_full_replan_is_warm_started_from_the_plan_in_force(
    settings: Settings, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    # Given two batches planned once
    h = _harness(settings, sessions, tmp_path)
    for k in "ab":
        h.submit([chat_line(f"{k}{i}") for i in range(4)], tmp=tmp_path)
    h.tick(T0)
    with h.sessions() as s:
        current = s.scalars(select(PlanRecord).where(PlanRecord.is_current.is_(True))).one()
        in_force = {
            (a.part_id, a.site, a.pool, a.model, a.slot_start.replace(tzinfo=UTC))
            for a in s.scalars(
                select(AssignmentRecord).where(AssignmentRecord.plan_id == current.id)
            )
        }
    assert in_force
    seen: list[PlanningProblem] = []

    def planner(problem: PlanningProblem) -> Plan:
        seen.append(problem)
        return default_planner(problem)

    # When the planner re-plans everything one slot later
    loop = _loop(h, T0 + timedelta(hours=1), planner)
    assert loop.step() is not None
    # Then the full re-plan's problem carries the plan in force's cells as its warm start
    assert seen
    assert set(seen[-1].warm_cells) == in_force


def test_superseded_assignments_are_compacted_after_the_retention(
    settings: Settings, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    # Given a plan (retention half an hour)
    h = _harness(settings.model_copy(update={"plan_retention_h": 0.5}), sessions, tmp_path)
    h.submit([chat_line(f"a{i}") for i in range(2)], tmp=tmp_path)
    first = h.tick(T0).plan_id
    with h.sessions() as s:
        assert s.scalar(select(func.count()).where(AssignmentRecord.plan_id == first))
    # When it is superseded an hour later (its shards move to the new version)
    second = _loop(h, T0 + timedelta(hours=1), default_planner).step()
    assert second is not None and second != first
    # Then the first version's row stays, with its totals; its assignments are gone
    with h.sessions() as s:
        old = s.get(PlanRecord, first)
        assert old is not None and old.totals
        left = s.scalar(select(func.count()).where(AssignmentRecord.plan_id == first))
        kept = s.scalar(select(func.count()).where(AssignmentRecord.plan_id == second))
    assert left == 0 and kept


def test_one_planner_per_database(sqlite_engine: object) -> None:
    # Given one planner holding the lock
    first, second = PlannerLock(sqlite_engine), PlannerLock(sqlite_engine)  # type: ignore[arg-type]
    assert first.acquire()
    try:
        # Then a second cannot take it until the first lets go
        assert not second.acquire()
    finally:
        first.release()
    assert second.acquire()
    second.release()


def test_signals_are_reused_within_their_freshness() -> None:
    calls: list[datetime] = []

    def fetch(fleet: object, slots: tuple[datetime, ...], now: datetime) -> dict:  # type: ignore[type-arg]
        calls.append(now)
        return {("s", t): t for t in slots}

    cache = SignalCache(fetch, fresh_s=600)  # type: ignore[arg-type]
    slots = (T0, T0 + timedelta(hours=1))
    cache(None, slots, T0)  # type: ignore[arg-type]
    cache(None, slots[1:], T0 + timedelta(minutes=5))  # type: ignore[arg-type]
    assert len(calls) == 1 and not cache.stale(T0 + timedelta(minutes=5))
    assert cache.stale(T0 + timedelta(minutes=10))
    cache(None, slots, T0 + timedelta(minutes=10))  # type: ignore[arg-type]
    assert len(calls) == 2


def test_a_new_batch_takes_the_fast_path_and_a_full_replan_follows(
    settings: Settings, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    # Given a current plan for batch A
    h = _harness(settings, sessions, tmp_path)
    a = h.submit([chat_line(f"a{i}") for i in range(3)], tmp=tmp_path)
    first = h.tick(T0).plan_id
    with h.sessions() as s:
        before = s.get(PlanRecord, first)
        assert before is not None
        co2_before = before.totals["co2_g"]
    a_shards = {sh.id for sh in _shards(h, a)}
    # When batch B arrives
    b = h.submit([chat_line(f"b{i}") for i in range(2)], tmp=tmp_path)
    loop = _loop(h, T0, default_planner)
    # Then B is placed around the plan in force, which it extends (A's shards untouched)
    assert loop.step() == first
    assert loop.state.pending_full
    assert {sh.status for sh in _shards(h, b)} == {"planned"}
    assert {sh.id for sh in _shards(h, a)} == a_shards
    with h.sessions() as s:
        plan = s.get(PlanRecord, first)
        assert plan is not None and plan.is_current
        assert plan.totals["co2_g"] > co2_before
        assert any("fast path" in n for n in plan.notes or [])
        parts = set(
            s.scalars(select(AssignmentRecord.part_id).where(AssignmentRecord.plan_id == first))
        )
    assert any(p.startswith(b) for p in parts) and any(p.startswith(a) for p in parts)
    # And once planner_full_every_s has passed, a full re-plan (consolidate) publishes a version
    loop.settings = loop.settings.model_copy(update={"planner_full_every_s": 0.0})
    assert loop.trigger(T0) == "consolidate"
    second = loop.step()
    assert second is not None and second != first and not loop.state.pending_full
    with h.sessions() as s:
        current = s.scalars(select(PlanRecord).where(PlanRecord.is_current.is_(True))).one()
        parts = set(
            s.scalars(select(AssignmentRecord.part_id).where(AssignmentRecord.plan_id == second))
        )
    assert current.id == second and current.trigger == "consolidate"
    assert any(p.startswith(b) for p in parts) and any(p.startswith(a) for p in parts)
    assert loop.trigger(T0) is None


def test_a_new_batch_is_placed_while_a_full_replan_is_still_solving(
    settings: Settings, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    # Given a plan for A and B, and a full re-plan of both (a slot boundary) held mid-solve
    h = _harness(settings, sessions, tmp_path)
    a, b = (h.submit([chat_line(f"{k}{i}") for i in range(3)], tmp=tmp_path) for k in "ab")
    first = h.tick(T0).plan_id
    entered, release = threading.Event(), threading.Event()

    def slow_when_full(problem: PlanningProblem) -> Plan:
        if len(problem.batches) > 1:  # the full re-plan; the fast path solves one part
            entered.set()
            assert release.wait(60), "the test never released the solve"
        return default_planner(problem)

    later = T0 + timedelta(hours=1)
    loop = _loop(h, later, slow_when_full)
    full: list[int | None] = []
    worker = threading.Thread(target=lambda: full.append(loop.step(mode="full")))
    worker.start()
    try:
        assert entered.wait(30), "the full re-plan never reached the solver"
        # When batch C arrives meanwhile
        c = h.submit([chat_line("c0")], now=later, tmp=tmp_path)
        # Then the fast path places it at once, extending the plan in force
        assert loop.step(mode="fast") == first
        assert worker.is_alive()
        assert {sh.status for sh in _shards(h, c)} == {"planned"}
        c_shards = {sh.id for sh in _shards(h, c)}
    finally:
        release.set()
        worker.join(60)
    # And the full re-plan, published after, leaves C's shards alone (it did not plan C)
    assert full and full[0] not in (None, first)
    assert {sh.id for sh in _shards(h, c)} == c_shards
    assert _shards(h, a) and _shards(h, b)
    # And C is consolidated by the next full re-plan
    loop.settings = loop.settings.model_copy(update={"planner_full_every_s": 0.0})
    assert loop.trigger(later) == "consolidate"
    third = loop.step(mode="full")
    with h.sessions() as s:
        parts = set(
            s.scalars(select(AssignmentRecord.part_id).where(AssignmentRecord.plan_id == third))
        )
    assert any(p.startswith(c) for p in parts)


@pytest.mark.slow  # starts processes
def test_the_planner_loop_runs_fast_path_and_full_replans_in_a_child_process(
    settings: Settings, sessions: sessionmaker[Session], tmp_path: Path, pinned_now: datetime
) -> None:
    # Given the loop as the service runs it: lock held, fast-path thread, full re-plans in a
    # spawned child process (gridshift's clock pinned mid-hour, ticking; fixed signals around it)
    h = _harness(
        settings.model_copy(update={"planner_poll_s": 0.05, "planner_full_every_s": 0.0}),
        sessions,
        tmp_path,
    )
    now = pinned_now
    h.signals = fixed_signals(h.fleet, now)
    loop = PlannerLoop(h.sessions, h.settings, h.fleet, signals_for=h.signals_for)
    stop = threading.Event()
    runner = threading.Thread(target=loop.run, args=(stop, PlannerLock(h.sessions.kw["bind"])))
    runner.start()
    try:
        # When a batch arrives (no plan yet: a full re-plan, in the child) and then another
        a = h.submit([chat_line("a0")], now=now, tmp=tmp_path)
        deadline = time.monotonic() + 120
        while not _shards(h, a) and time.monotonic() < deadline:
            time.sleep(0.1)
        b = h.submit([chat_line("b0")], now=now, tmp=tmp_path)
        while not _shards(h, b) and time.monotonic() < deadline:
            time.sleep(0.1)
        # Then both are planned, and a full re-plan follows the fast path
        while loop.state.pending_full and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        runner.join(60)
    assert _shards(h, a) and _shards(h, b)
    assert loop.pool is None and not runner.is_alive()
    with h.sessions() as s:
        triggers = list(s.scalars(select(PlanRecord.trigger).order_by(PlanRecord.id)))
    # A's plan came from the child; B extended it; mid-hour, on fixed signals, the slot B's fast
    # path took is still the best, so the consolidation that follows moves nothing and stores
    # no plan version (tests/unit/test_slot_boundaries.py covers the hour's end)
    assert triggers == ["new_batch"], triggers
    assert not loop.state.pending_full and not loop.state.failures
