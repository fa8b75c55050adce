"""A full disk is an infrastructure fault, not poison: real tmpfs, real PostgreSQL, tiny model.

The data dir is a 2 MiB tmpfs filled to the last byte; the worker path (``WorkerRuntime.run``
-> ``run_shard``) runs the batch's shards again and again while it is full, then the space is
freed and every request must complete exactly once, none failed, none split as poison.
"""

from __future__ import annotations

import errno
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import fill_disk
from execution_helpers import T0, Harness, chat_line, make_harness
from prometheus_client import generate_latest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.clock import now_utc
from scheduler.config import Settings
from scheduler.dispatch.outputs import read_jsonl, write_jsonl_atomic
from scheduler.dispatch.poison import MAX_ATTEMPTS, POISON_AFTER
from scheduler.review.metrics import make_registry
from scheduler.review.workers_view import workers_view
from scheduler.store.db import make_engine, session_factory
from scheduler.store.migrate import upgrade
from scheduler.store.tables import Batch, Execution, File, LedgerEntry, Shard
from workers.presence import PresenceBeat
from workers.storage import StorageGuard, free_disk_mb, is_storage_fault

pytestmark = pytest.mark.integration

REQUESTS = 20
LEASE_S = 10.0
FULL_FOR = timedelta(minutes=3)


@pytest.fixture
def pg_sessions(fresh_pg_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(fresh_pg_url)
    upgrade(engine)
    yield session_factory(engine)
    engine.dispose()


class FakeTime:
    """The guard's monotonic clock and sleep: sleeping advances it (no real waiting)."""

    def __init__(self) -> None:
        self.t = 0.0

    def monotonic(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def _harness(
    tmp_path: Path,
    disk: Path,
    sessions: sessionmaker[Session],
    weights: Path,
    *,
    min_free_mb: float,
    backoff_max_s: float = 60.0,
) -> tuple[Harness, FakeTime, str]:
    settings = Settings(
        data_dir=disk / "data",
        database_url="postgresql://unused",  # sessions come from the fixture
        max_shard_requests=4,
        lease_s=LEASE_S,
        heartbeat_s=LEASE_S / 2,
        min_free_disk_mb=min_free_mb,
        storage_backoff_max_s=backoff_max_s,
    )
    h = make_harness(settings, sessions, weights)
    fake = FakeTime()
    h.runtime.storage = StorageGuard(settings, monotonic=fake.monotonic, sleep=fake.sleep)
    lines = [chat_line(f"r{i}", max_tokens=2) for i in range(REQUESTS)]
    batch_id = h.submit(lines, tmp=tmp_path)
    return h, fake, batch_id


def _run_round(h: Harness, fake: FakeTime, now: timedelta) -> Counter[str]:
    """One tick (due shards queued, queued ones re-sent) and every sent shard run."""
    at = T0 + now
    h.tick(at, allow_replan=False, requeue_after_s=0)
    fake.t += 120.0  # time passes between rounds: any backoff is over
    return Counter(o.status for o in h.drain(at))


def _assert_every_request_once(h: Harness, batch_id: str) -> None:
    with h.sessions() as s:
        batch = s.get(Batch, batch_id)
        assert batch is not None
        assert batch.status == "completed", batch.status
        assert (batch.request_completed, batch.request_failed) == (REQUESTS, 0)
        out = read_jsonl(s.get(File, batch.output_file_id).path)  # type: ignore[union-attr]
        assert batch.error_file_id is None or not read_jsonl(
            s.get(File, batch.error_file_id).path  # type: ignore[union-attr]
        )
        failed = s.scalar(select(func.count()).where(Shard.status == "failed"))
        booked = s.scalar(select(func.sum(LedgerEntry.requests_done)))
    assert Counter(line["custom_id"] for line in out) == Counter(f"r{i}" for i in range(REQUESTS))
    assert failed == 0  # no shard failed or split as poison
    assert booked == REQUESTS  # the ledger booked each request once


def test_full_disk_faults_are_not_counted_and_every_request_completes_once_space_returns(
    tmp_path: Path, small_disk: Path, pg_sessions: sessionmaker[Session], tiny_weights: Path
) -> None:
    # threshold 0 and no backoff to speak of: the worker claims every shard each round and
    # hits ENOSPC writing every attempt's outputs
    h, fake, batch_id = _harness(
        tmp_path, small_disk, pg_sessions, tiny_weights, min_free_mb=0, backoff_max_s=0.01
    )
    h.tick(T0)  # plan
    with h.sessions() as s:
        first = s.scalar(select(func.min(Shard.slot_start)))
        last = s.scalar(select(func.max(Shard.slot_start)))
    assert first is not None and last is not None
    start = max(first, T0) - T0
    filler = fill_disk(small_disk)
    assert free_disk_mb(small_disk) < 0.1
    rounds = MAX_ATTEMPTS + 3  # more faults than the attempt cap and the poison threshold
    elapsed = max(last - T0, start)
    seen: Counter[str] = Counter()
    for i in range(rounds):
        seen += _run_round(h, fake, elapsed + timedelta(seconds=LEASE_S * i))
    assert seen == {"storage_fault": rounds * (REQUESTS // 4)}, seen
    with h.sessions() as s:
        shards = s.scalars(select(Shard).where(Shard.batch_id == batch_id)).all()
        faults = s.scalar(select(func.count()).where(Execution.status == "storage_fault"))
        counted = s.scalar(select(func.count()).where(Execution.status != "storage_fault"))
    assert len(shards) == REQUESTS // 4  # none split in halves
    assert {sh.status for sh in shards} == {"queued"}
    assert max(sh.attempts for sh in shards) > max(MAX_ATTEMPTS, POISON_AFTER)
    assert faults == seen["storage_fault"] and counted == 0
    assert h.runtime.storage is not None
    assert h.runtime.storage.snapshot()["storage_faults"] == seen["storage_fault"]
    assert not [p for p in small_disk.rglob("*.tmp") if p.is_file()]  # no temporaries kept
    with h.sessions() as s:  # the worker's state and the metric say so
        (worker,) = workers_view(s, h.fleet, T0).workers
    assert worker.attempts_storage_fault == faults and worker.attempts_failed == 0
    assert "No space left on device" in str(worker.last_storage_error)
    scraped = generate_latest(make_registry(h.sessions)).decode()
    assert (
        f'gridshift_storage_faults_total{{pool="{shards[0].pool}",site="{shards[0].site}"}} {faults}.0'
        in scraped
    )
    filler.unlink()
    for i in range(3):
        _run_round(h, fake, elapsed + timedelta(seconds=LEASE_S * (rounds + i)))
    _assert_every_request_once(h, batch_id)


def test_a_worker_claims_nothing_while_free_space_is_under_the_threshold(
    tmp_path: Path, small_disk: Path, pg_sessions: sessionmaker[Session], tiny_weights: Path
) -> None:
    h, fake, batch_id = _harness(tmp_path, small_disk, pg_sessions, tiny_weights, min_free_mb=1)
    h.tick(T0)
    with h.sessions() as s:
        last = s.scalar(select(func.max(Shard.slot_start)))
    assert last is not None
    elapsed = max(last - T0, timedelta(0))
    filler = fill_disk(small_disk)
    rounds = int(FULL_FOR.total_seconds() // LEASE_S)  # 3 minutes of full disk, a round a lease
    for i in range(rounds):
        seen = _run_round(h, fake, elapsed + timedelta(seconds=LEASE_S * i))
        assert set(seen) == {"deferred"}, seen
    guard = h.runtime.storage
    assert guard is not None
    snap = guard.snapshot()
    assert snap["state"] == "low_disk" and snap["deferrals"] == rounds * (REQUESTS // 4)
    assert isinstance(snap["free_disk_mb"], float) and snap["free_disk_mb"] < 1
    with h.sessions() as s:
        assert s.scalar(select(func.sum(Shard.attempts))) == 0  # nothing claimed
        assert s.scalar(select(func.count()).select_from(Execution)) == 0
    # the worker says so in its presence beat: no lease, no attempt, but state low_disk
    site, pool = h.fleet.sites[0].name, h.fleet.sites[0].pools[0].name
    presence = PresenceBeat(h.sessions, "w1", site, pool, every_s=60)
    presence.storage = guard
    presence.write()
    with h.sessions() as s:
        (worker,) = workers_view(s, h.fleet, now_utc()).workers
    assert worker.worker == "w1" and worker.state == "low_disk" and worker.live
    assert worker.detail is not None and "MiB free in the data dir" in worker.detail
    assert f"{rounds * (REQUESTS // 4)} shards left queued" in worker.detail
    filler.unlink()
    for i in range(3):
        _run_round(h, fake, elapsed + timedelta(seconds=LEASE_S * (rounds + i)))
    assert guard.snapshot()["state"] == "ok"
    _assert_every_request_once(h, batch_id)
    presence.write()  # space is back: the beat says idle again
    with h.sessions() as s:
        (worker,) = workers_view(s, h.fleet, now_utc()).workers
    assert worker.state == "idle" and worker.attempts_done == REQUESTS // 4


def test_a_failed_atomic_write_raises_a_storage_fault_and_leaves_no_temporary(
    small_disk: Path,
) -> None:
    fill_disk(small_disk)
    target = small_disk / "out.jsonl"
    with pytest.raises(OSError) as info:
        write_jsonl_atomic(target, ({"n": i, "pad": "x" * 1000} for i in range(100)))
    assert is_storage_fault(info.value)
    assert not target.exists()
    assert [p.name for p in small_disk.iterdir()] == ["filler"]


def test_storage_faults_back_off_doubling_up_to_the_cap_and_reset_after_a_write(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path, min_free_disk_mb=0, storage_backoff_max_s=5)
    fake = FakeTime()
    guard = StorageGuard(settings, monotonic=fake.monotonic, sleep=fake.sleep)
    assert guard.check()
    waits = [guard.fault(OSError(errno.ENOSPC, "full")) for _ in range(5)]
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert not guard.check() and guard.snapshot()["state"] == "backoff"
    assert not guard.wait_ready(2.0)  # still backing off after 2 s: left queued
    assert guard.wait_ready(10.0) and fake.t >= 5.0
    guard.wrote()
    assert guard.fault(OSError(errno.EROFS, "read-only")) == 1.0
    assert guard.snapshot()["storage_faults"] == 6 and guard.snapshot()["deferrals"] == 1
    assert is_storage_fault(RuntimeError("wrapped")) is False
    try:
        try:
            raise OSError(errno.EDQUOT, "quota")
        except OSError as e:
            raise RuntimeError("engine wrapped it") from e
    except RuntimeError as wrapped:
        assert is_storage_fault(wrapped)
