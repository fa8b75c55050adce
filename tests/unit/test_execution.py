"""Execution on SQLite with the real tiny model: plan, tick, leases, run_shard, finalize, ledger."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from execution_helpers import T0, Harness, chat_line, make_harness
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import Settings
from scheduler.dispatch.leases import claim_shard, mark_done
from scheduler.dispatch.outputs import read_jsonl
from scheduler.dispatch.replan import replan
from scheduler.domain import ShardStatus
from scheduler.errors import LeaseLost
from scheduler.store.batches import cancel_batch
from scheduler.store.db import transaction
from scheduler.store.tables import Batch, BatchRequest, File, LedgerEntry, Shard


@pytest.fixture
def harness(tmp_path: Path, sessions: sessionmaker[Session], tiny_weights: Path) -> Harness:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'gs.db'}",
        max_shard_requests=3,
        lease_s=60,
        heartbeat_s=30,
    )
    return make_harness(settings, sessions, tiny_weights)


def _run_to_end(h: Harness, batch_id: str, *, steps: int = 10) -> str:
    """Tick and run, jumping the clock to the next planned slot each time (one plan, no re-plans)."""
    now = T0
    h.tick(now)
    for _ in range(steps):
        h.tick(now, allow_replan=False)
        h.drain(now)
        with h.sessions() as s:
            status = s.get(Batch, batch_id).status  # type: ignore[union-attr]
            nxt = s.scalar(select(func.min(Shard.slot_start)).where(Shard.status == "planned"))
        if status not in ("in_progress", "finalizing") or nxt is None:
            return status
        now = max(now, nxt)
    return status


def _queue_first_slot(h: Harness) -> tuple[list[str], datetime]:
    """Plan at T0, then tick at the first planned slot: returns (queued shard ids, that time)."""
    h.tick(T0)
    with h.sessions() as s:
        first = s.scalar(select(func.min(Shard.slot_start)))
    assert first is not None
    now = max(first, T0)
    report = h.tick(now, allow_replan=False)
    h.sent.clear()
    return report.queued, now


def _file_lines(h: Harness, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    with h.sessions() as s:
        return read_jsonl(s.get(File, file_id).path)  # type: ignore[union-attr]


def test_batch_completes_with_one_output_line_per_request_and_one_ledger_row_per_shard(
    harness: Harness, tmp_path: Path
) -> None:
    # Given a batch of 8 requests, one of them over the tiny model's 256-token context
    lines = [chat_line(f"r{i}") for i in range(7)] + [chat_line("too-long", "word " * 400)]
    batch_id = harness.submit(lines, tmp=tmp_path)
    # When the dispatcher plans and ticks through the slots and the worker runs what is sent
    status = _run_to_end(harness, batch_id)
    # Then the batch completed, every good custom_id is in the output file exactly once
    assert status == "completed"
    with harness.sessions() as s:
        batch = s.get(Batch, batch_id)
        assert batch is not None
        shards = list(s.scalars(select(Shard).where(Shard.batch_id == batch_id)))
        ledger = list(s.scalars(select(LedgerEntry).where(LedgerEntry.batch_id == batch_id)))
    out = _file_lines(harness, batch.output_file_id)
    err = _file_lines(harness, batch.error_file_id)
    assert Counter(x["custom_id"] for x in out) == Counter(f"r{i}" for i in range(7))
    assert all(x["response"]["status_code"] == 200 and x["error"] is None for x in out)
    # and the request the engine refused is in the error file with a 4xx status
    assert [x["custom_id"] for x in err] == ["too-long"]
    assert 400 <= err[0]["response"]["status_code"] < 500
    assert (batch.request_completed, batch.request_failed) == (7, 1)
    # and each shard booked exactly one ledger row, with the shard's counts
    assert all(sh.status == ShardStatus.DONE for sh in shards)
    assert sorted(le.shard_id for le in ledger) == sorted(sh.id for sh in shards)
    assert sum(le.requests_done for le in ledger) == 7
    assert all(le.it_energy_kwh > 0 and le.energy_method for le in ledger)
    # and each model load is booked once, on the first shard after it, labelled and inside
    # that shard's IT energy
    loaded = [le for le in ledger if le.model_load_kwh is not None]
    assert len(loaded) == harness.runtime.engine_cache.loads >= 1
    for le in loaded:
        assert le.model_load_method in ("estimated", "measured-rapl", "measured-nvml")
        assert 0 <= (le.model_load_kwh or 0) <= le.it_energy_kwh
    assert all(
        le.facility_energy_kwh == pytest.approx(le.it_energy_kwh * 1.2)
        for le in ledger
        if le.site == "es-madrid"
    )


def test_a_duplicate_message_for_a_done_shard_changes_nothing(
    harness: Harness, tmp_path: Path
) -> None:
    # Given a completed batch
    batch_id = harness.submit([chat_line(f"r{i}") for i in range(4)], tmp=tmp_path)
    assert _run_to_end(harness, batch_id) == "completed"
    with harness.sessions() as s:
        shard_ids = list(s.scalars(select(Shard.id).where(Shard.batch_id == batch_id)))
        rows_before = s.scalar(select(func.count(LedgerEntry.id)))
    # When every shard's message is delivered again
    outcomes = [harness.runtime.run(sid, clock=lambda: T0) for sid in shard_ids]
    # Then each run returns at once and books nothing
    assert {o.status for o in outcomes} == {"skipped"}
    with harness.sessions() as s:
        assert s.scalar(select(func.count(LedgerEntry.id))) == rows_before


def test_two_workers_racing_for_a_shard_only_one_claims_it(
    harness: Harness, tmp_path: Path
) -> None:
    # Given a queued shard
    harness.submit([chat_line(f"r{i}") for i in range(3)], tmp=tmp_path)
    queued, now = _queue_first_slot(harness)
    shard_id = queued[0]
    # When two workers claim it at the same moment
    a = claim_shard(harness.sessions, shard_id, worker_id="a", now=now, lease_s=60)
    b = claim_shard(harness.sessions, shard_id, worker_id="b", now=now, lease_s=60)
    # Then exactly one holds the lease
    assert (a is None) != (b is None)


def test_expired_lease_is_requeued_and_only_the_finishing_attempt_books_energy(
    harness: Harness, tmp_path: Path
) -> None:
    # Given worker A claimed a shard and went silent (killed: no heartbeat, no ledger row)
    batch_id = harness.submit([chat_line(f"r{i}") for i in range(3)], tmp=tmp_path)
    queued, now = _queue_first_slot(harness)
    shard_id = queued[0]
    dead = claim_shard(harness.sessions, shard_id, worker_id="dead", now=now, lease_s=60)
    assert dead is not None
    # When the lease runs out, the tick re-queues and re-sends it, and worker B runs it
    later = now + timedelta(seconds=61)
    report = harness.tick(later)
    assert report.requeued_expired == [shard_id]
    assert [x[1] for x in harness.sent].count(shard_id) == 1
    outcome = harness.drain(later)[0]
    # Then B's attempt (the second) is the one booked, and A can no longer finish
    assert (outcome.status, outcome.attempt) == ("done", 2)
    with pytest.raises(LeaseLost), transaction(harness.sessions) as s:
        mark_done(
            s, dead, now=later, requests_done=3, requests_failed=0, output_path="x", error_path="y"
        )
    with harness.sessions() as s:
        ledger = list(s.scalars(select(LedgerEntry).where(LedgerEntry.shard_id == shard_id)))
        assert [le.attempt for le in ledger] == [2]
        assert s.get(Batch, batch_id).request_completed == 3  # type: ignore[union-attr]


def test_batch_past_its_deadline_expires_with_batch_expired_lines_for_what_did_not_run(
    harness: Harness, tmp_path: Path
) -> None:
    # Given a 2-hour batch whose first shard ran
    batch_id = harness.submit([chat_line(f"r{i}") for i in range(6)], tmp=tmp_path, window="2h")
    now = T0
    harness.tick(now)
    with harness.sessions() as s:
        shards = list(
            s.scalars(select(Shard).where(Shard.batch_id == batch_id).order_by(Shard.slot_start))
        )
    with transaction(harness.sessions) as s:  # bring one shard forward and run only it
        s.get(Shard, shards[0].id).status = ShardStatus.QUEUED.value  # type: ignore[union-attr]
    harness.runtime.run(shards[0].id, clock=lambda: now)
    ran = shards[0].request_count
    # When the deadline passes
    harness.tick(T0 + timedelta(hours=3))
    # Then the batch is expired: the finished requests are in the output file, the rest expired
    with harness.sessions() as s:
        batch = s.get(Batch, batch_id)
        assert batch is not None and batch.status == "expired"
    out = _file_lines(harness, batch.output_file_id)
    err = _file_lines(harness, batch.error_file_id)
    assert len(out) == ran
    assert {x["error"]["code"] for x in err} == {"batch_expired"}
    assert sorted(x["custom_id"] for x in out + err) == sorted(f"r{i}" for i in range(6))


def test_cancelled_batch_keeps_finished_outputs_and_stops_unstarted_shards(
    harness: Harness, tmp_path: Path
) -> None:
    # Given a batch with one shard finished and the others planned
    batch_id = harness.submit([chat_line(f"r{i}") for i in range(6)], tmp=tmp_path)
    harness.tick(T0)
    with harness.sessions() as s:
        first = s.scalars(
            select(Shard).where(Shard.batch_id == batch_id).order_by(Shard.slot_start)
        ).first()
    assert first is not None
    with transaction(harness.sessions) as s:
        s.get(Shard, first.id).status = ShardStatus.QUEUED.value  # type: ignore[union-attr]
    harness.runtime.run(first.id, clock=lambda: T0)
    # When the tenant cancels and the dispatcher ticks
    with harness.sessions() as s, s.begin():
        cancel_batch(s, None, batch_id)
    harness.tick(T0 + timedelta(minutes=1))
    # Then the batch is cancelled, the finished requests are downloadable, nothing else ran
    with harness.sessions() as s:
        batch = s.get(Batch, batch_id)
        statuses = Counter(s.scalars(select(Shard.status).where(Shard.batch_id == batch_id)))
    assert batch is not None and batch.status == "cancelled"
    assert len(_file_lines(harness, batch.output_file_id)) == first.request_count
    assert statuses[ShardStatus.DONE.value] == 1 and statuses[ShardStatus.QUEUED.value] == 0


def test_replanning_never_moves_leased_work_and_every_request_stays_in_one_shard(
    harness: Harness, tmp_path: Path
) -> None:
    # Given a plan whose first shard is queued
    batch_id = harness.submit([chat_line(f"r{i}") for i in range(9)], tmp=tmp_path)
    harness.tick(T0)
    with transaction(harness.sessions) as s:
        first = s.scalars(
            select(Shard).where(Shard.batch_id == batch_id).order_by(Shard.slot_start)
        ).first()
        assert first is not None
        first.status = ShardStatus.QUEUED.value
        kept = (first.id, first.site, first.slot_start)
    # When the service re-plans an hour later
    plan_id = replan(
        harness.sessions,
        harness.settings,
        harness.fleet,
        T0 + timedelta(hours=1),
        trigger="manual",
        signals_for=harness.signals_for,
    )
    # Then the queued shard is untouched and the new plan covers exactly the other requests
    assert plan_id is not None
    with harness.sessions() as s:
        again = s.get(Shard, kept[0])
        assert again is not None and (again.id, again.site, again.slot_start, again.status) == (
            *kept,
            "queued",
        )
        owners = list(
            s.scalars(select(BatchRequest.shard_id).where(BatchRequest.batch_id == batch_id))
        )
        planned = list(
            s.scalars(select(Shard).where(Shard.batch_id == batch_id, Shard.plan_id == plan_id))
        )
    assert None not in owners
    assert sum(sh.request_count for sh in planned) == 9 - first.request_count
    assert Counter(owners) == Counter({sh.id: sh.request_count for sh in [again, *planned]})


def test_output_lines_carry_deterministic_ids_in_openai_shape(
    harness: Harness, tmp_path: Path
) -> None:
    # Given a finished batch
    batch_id = harness.submit([chat_line(f"r{i}") for i in range(2)], tmp=tmp_path)
    assert _run_to_end(harness, batch_id) == "completed"
    with harness.sessions() as s:
        batch = s.get(Batch, batch_id)
    # Then every line has the OpenAI keys and a chat.completion body with usage
    for line in _file_lines(harness, batch.output_file_id):  # type: ignore[union-attr]
        assert set(line) == {"id", "custom_id", "response", "error"}
        assert line["id"].startswith("batch_req_") and line["response"]["request_id"].startswith(
            "req_"
        )
        body = line["response"]["body"]
        assert body["object"] == "chat.completion" and body["usage"]["completion_tokens"] >= 1
        json.dumps(line)


def test_a_queued_shard_whose_message_was_lost_is_sent_again_on_an_idle_pool(
    harness: Harness, tmp_path: Path
) -> None:
    # Given a shard queued and sent, whose message never reached a worker
    harness.submit([chat_line(f"r{i}") for i in range(3)], tmp=tmp_path)
    queued, now = _queue_first_slot(harness)
    # When the dispatcher ticks soon after, and again once the re-send delay has passed
    soon = harness.tick(now + timedelta(seconds=5), allow_replan=False, requeue_after_s=60)
    later = harness.tick(now + timedelta(seconds=61), allow_replan=False, requeue_after_s=60)
    # Then it is left alone at first, then sent again, and one run completes it
    assert soon.resent_stale == []
    assert set(queued) <= set(later.resent_stale)
    outcomes = harness.drain(now + timedelta(seconds=61))
    assert [o.status for o in outcomes if o.shard_id == queued[0]] == ["done"]


def test_a_cancelling_batch_is_cancelled_when_its_last_running_shard_ends(
    harness: Harness, tmp_path: Path
) -> None:
    # Given a batch whose first shard is running when the tenant cancels
    batch_id = harness.submit([chat_line(f"r{i}") for i in range(6)], tmp=tmp_path)
    queued, now = _queue_first_slot(harness)
    claim = claim_shard(harness.sessions, queued[0], worker_id="w0", now=now, lease_s=1)
    assert claim is not None
    with harness.sessions() as s, s.begin():
        cancel_batch(s, None, batch_id)
        assert s.get(Batch, batch_id).status == "cancelling"  # type: ignore[union-attr]
    # When that shard finishes (taken over by the runtime once the short lease ran out)
    outcome = harness.runtime.run(queued[0], clock=lambda: now + timedelta(seconds=2))
    assert outcome.status == "done"
    # Then the batch is cancelled at once, with the finished requests in its output file
    with harness.sessions() as s:
        batch = s.get(Batch, batch_id)
    assert batch is not None and batch.status == "cancelled"
    assert len(_file_lines(harness, batch.output_file_id)) == batch.request_completed > 0
