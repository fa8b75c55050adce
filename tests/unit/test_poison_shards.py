"""Poison shards: a shard that keeps killing its worker is halved until the culprit is alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.dispatch.leases import claim_shard, requeue_expired
from scheduler.dispatch.poison import MAX_ATTEMPTS, POISON_AFTER
from scheduler.store.db import transaction
from scheduler.store.tables import Batch, BatchRequest, Shard
from tests.factories import one_queued_shard

NOW = datetime(2026, 11, 22, 3, tzinfo=UTC)
LEASE_S = 5


def _seed(sessions: sessionmaker[Session], requests: int) -> None:
    one_queued_shard(sessions, NOW, requests=requests, request_rows=True, planned_energy_kwh=1.0)


def _die(sessions: sessionmaker[Session], shard_id: str, t: datetime) -> list[str]:
    """A worker claims ``shard_id`` and dies; the dispatcher's tick finds the lease expired."""
    assert claim_shard(sessions, shard_id, worker_id="w", now=t, lease_s=LEASE_S) is not None
    with transaction(sessions) as s:
        return requeue_expired(s, now=t + timedelta(seconds=LEASE_S + 1))


def test_a_shard_that_keeps_killing_its_worker_is_halved_until_the_culprit_fails_alone(
    sessions: sessionmaker[Session],
) -> None:
    # Given a shard of 8 requests where request r5 kills any worker that runs it
    _seed(sessions, 8)
    poison = "r5"
    t = NOW
    # When workers keep dying on every shard that holds r5 (and finish the others)
    pending = ["s1"]
    rounds = 0
    while pending and rounds < 40:
        rounds += 1
        shard_id = pending.pop(0)
        with sessions() as s:
            members = set(
                s.scalars(select(BatchRequest.custom_id).where(BatchRequest.shard_id == shard_id))
            )
        if poison not in members:
            with transaction(sessions) as s:  # a healthy shard completes
                s.get(Shard, shard_id).status = "done"  # type: ignore[union-attr]
            continue
        t += timedelta(minutes=1)
        to_send = _die(sessions, shard_id, t)  # re-queued itself, or its two halves
        pending.extend(to_send)
    # Then the split found r5 alone, failed it with a clear error, and every other request
    # sits in a shard that completed
    with sessions() as s:
        shards = {sh.id: sh for sh in s.scalars(select(Shard))}
        owner = dict(s.execute(select(BatchRequest.custom_id, BatchRequest.shard_id)).all())
        batch = s.get(Batch, "b1")
    culprit = shards[owner[poison]]
    assert culprit.status == "failed" and culprit.request_count == 1
    assert "poison request" in (culprit.last_error or "")
    assert all(shards[owner[f"r{i}"]].status == "done" for i in range(8) if f"r{i}" != poison)
    assert shards["s1"].status == "failed" and shards["s1"].request_count == 0
    assert "split after its worker died" in (shards["s1"].last_error or "")
    # halving: log2(8) = 3 splits deep, each shard dying POISON_AFTER times, not 8 runs alone
    assert rounds <= 3 * POISON_AFTER + 3 * 2 + POISON_AFTER + 4
    # planned figures move with the requests (never counted twice)
    assert sum(sh.planned_energy_kwh for sh in shards.values()) == 1.0
    # and the batch moves on to finalizing once the poison request was the last one left
    assert batch is not None and batch.status == "finalizing"


def test_a_worker_cannot_reclaim_a_shard_past_the_attempt_cap(
    sessions: sessionmaker[Session],
) -> None:
    _seed(sessions, 1)
    with transaction(sessions) as s:
        sh = s.get(Shard, "s1")
        assert sh is not None
        sh.status, sh.attempts, sh.lease_expires_at = "running", MAX_ATTEMPTS, NOW
    later = NOW + timedelta(minutes=1)
    assert claim_shard(sessions, "s1", worker_id="w", now=later, lease_s=LEASE_S) is None
    # the dispatcher fails it instead of re-queueing it forever
    with transaction(sessions) as s:
        assert requeue_expired(s, now=later) == []
    with sessions() as s:
        assert s.get(Shard, "s1").status == "failed"  # type: ignore[union-attr]
