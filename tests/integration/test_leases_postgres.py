"""Lease claims on PostgreSQL under real concurrency: one winner, and completion guarded by the lease."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from scheduler.dispatch.leases import Claim, claim_shard, mark_done, requeue_expired
from scheduler.errors import LeaseLost
from scheduler.store.db import make_engine, session_factory, transaction
from scheduler.store.migrate import upgrade
from scheduler.store.tables import Shard
from tests.factories import one_queued_shard

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 22, 3, tzinfo=UTC)


@pytest.fixture
def pg_sessions(fresh_pg_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(fresh_pg_url, pool_size=12)
    upgrade(engine)
    factory = session_factory(engine)
    one_queued_shard(factory, NOW)
    yield factory
    engine.dispose()


def test_only_one_of_many_concurrent_claims_wins_on_postgresql(
    pg_sessions: sessionmaker[Session],
) -> None:
    # Given one queued shard and ten workers released at the same instant
    barrier = threading.Barrier(10)
    claims: list[Claim | None] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        barrier.wait()
        c = claim_shard(pg_sessions, "s1", worker_id=f"w{i}", now=NOW, lease_s=60)
        with lock:
            claims.append(c)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(10)]
    # When they all claim it
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    # Then exactly one holds it, as attempt 1
    winners = [c for c in claims if c is not None]
    assert len(claims) == 10 and len(winners) == 1 and winners[0].attempt == 1


def test_a_worker_whose_lease_was_requeued_cannot_complete_the_shard(
    pg_sessions: sessionmaker[Session],
) -> None:
    # Given a worker holding the lease, which then expires and the dispatcher re-queues the shard
    first = claim_shard(pg_sessions, "s1", worker_id="old", now=NOW, lease_s=5)
    assert first is not None
    with transaction(pg_sessions) as s:
        assert requeue_expired(s, now=NOW + timedelta(seconds=6)) == ["s1"]
    second = claim_shard(
        pg_sessions, "s1", worker_id="new", now=NOW + timedelta(seconds=7), lease_s=5
    )
    assert second is not None and second.attempt == 2
    # When the old worker tries to finish, it loses; the new one completes
    with pytest.raises(LeaseLost), transaction(pg_sessions) as s:
        mark_done(
            s, first, now=NOW, requests_done=1, requests_failed=0, output_path="a", error_path="b"
        )
    with transaction(pg_sessions) as s:
        mark_done(
            s, second, now=NOW, requests_done=1, requests_failed=0, output_path="c", error_path="d"
        )
    with pg_sessions() as s:
        shard = s.get(Shard, "s1")
        assert shard is not None and (shard.status, shard.output_path, shard.attempts) == (
            "done",
            "c",
            2,
        )
