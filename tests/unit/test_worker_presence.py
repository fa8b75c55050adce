"""Every worker that sent a heartbeat is listed with its state; live ones count in their pool.

Seen on a live service: the Workers view said "live workers 0" on every pool while three
workers ran, and a worker that had not run a shard was not listed at all.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from scheduler.clock import frozen, use_clock
from scheduler.review.workers_view import workers_view
from scheduler.samples import load_sample_fleet
from scheduler.store.presence import WorkerPresence, beat
from workers.presence import PresenceBeat

NOW = datetime(2026, 3, 2, 23, 0, 5, tzinfo=UTC)


def _beat(sessions: sessionmaker[Session], worker: str, pool: str, ago_s: float, **kw: str) -> None:
    site = worker.split(".")[0]
    with sessions() as s, s.begin():
        beat(
            s,
            worker=worker,
            site=site,
            pool=pool,
            host="edge-1",
            pid=100,
            state=kw.get("state", "idle"),
            now=NOW - timedelta(seconds=ago_s),
            shard_id=kw.get("shard_id"),
        )


def test_idle_workers_are_listed_live_and_counted_in_their_pool(
    sessions: sessionmaker[Session],
) -> None:
    # Given three workers that never ran a shard: two beating now, one that stopped, one stale
    _beat(sessions, "gb-london.cpu.11@edge-1", "cpu", 5)
    _beat(sessions, "es-madrid.cpu.12@edge-1", "cpu", 20, state="running", shard_id="sh-1")
    _beat(sessions, "de-frankfurt.cpu.13@edge-1", "cpu", 10, state="stopped")
    _beat(sessions, "de-frankfurt.cpu.14@edge-1", "cpu", 600)

    # When the workers view is read with 3 heartbeats (90 s) of grace
    with sessions() as s:
        view = workers_view(s, load_sample_fleet(), NOW, stale_after_s=90)

    # Then every worker that beat is listed, with its own state and shard
    rows = {w.worker: w for w in view.workers}
    assert set(rows) == {
        "gb-london.cpu.11@edge-1",
        "es-madrid.cpu.12@edge-1",
        "de-frankfurt.cpu.13@edge-1",
        "de-frankfurt.cpu.14@edge-1",
    }
    assert rows["gb-london.cpu.11@edge-1"].live and rows["gb-london.cpu.11@edge-1"].state == "idle"
    assert (
        rows["es-madrid.cpu.12@edge-1"].live and rows["es-madrid.cpu.12@edge-1"].state == "running"
    )
    assert rows["gb-london.cpu.11@edge-1"].presence_age_s == 5
    assert not rows["de-frankfurt.cpu.13@edge-1"].live  # said stopped
    assert not rows["de-frankfurt.cpu.14@edge-1"].live  # 10 min without a beat
    # and each pool counts its live workers
    live = {p.site: p.live_workers for p in view.pools}
    assert live == {"gb-london": 1, "de-frankfurt": 0, "es-madrid": 1}


def test_the_beat_thread_says_idle_running_and_stopped(sessions: sessionmaker[Session]) -> None:
    # Given a worker's beat thread on a pinned clock (a long period: the test drives the beats)
    with use_clock(frozen(NOW)):
        beat_thread = PresenceBeat(sessions, "es-madrid.cpu.7@edge-2", "es-madrid", "cpu", 3600)
        beat_thread.start()
        try:
            # When it starts, takes a shard, finishes it
            states = []
            for shard in ("sh-9", None):
                beat_thread.running(shard)
                with sessions() as s:
                    row = s.get(WorkerPresence, "es-madrid.cpu.7@edge-2")
                    assert row is not None
                    states.append((row.state, row.shard_id))
        finally:
            beat_thread.stop()
            beat_thread.join(5)
        with sessions() as s:
            final = s.get(WorkerPresence, "es-madrid.cpu.7@edge-2")
            assert final is not None
            # Then the row followed it, stamped with the pinned clock, and ends stopped
            assert states == [("running", "sh-9"), ("idle", None)]
            assert final.state == "stopped" and final.last_seen_at == NOW
            assert (final.site, final.pool) == ("es-madrid", "cpu")
