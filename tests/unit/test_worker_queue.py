"""A worker started for one site and pool refuses shards of any other, leaving them queued."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest
from execution_helpers import T0, chat_line, make_harness
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import Settings
from scheduler.domain import ShardStatus
from scheduler.store.tables import Shard


def test_a_worker_refuses_and_does_not_claim_a_shard_of_another_pool(
    tmp_path: Path,
    sessions: sessionmaker[Session],
    tiny_model_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a queued shard planned for one site's pool
    settings = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'g.db'}")
    h = make_harness(settings, sessions, tiny_model_dir)
    h.submit([chat_line("r0"), chat_line("r1")], tmp=tmp_path)
    h.tick(T0)
    with h.sessions() as s:
        first = s.scalar(select(func.min(Shard.slot_start)))
    assert first is not None
    queued = h.tick(max(first, T0), allow_replan=False).queued
    assert queued
    shard_id = queued[0]
    with h.sessions() as s:
        shard = s.get(Shard, shard_id)
        assert shard is not None
        home = (shard.site, shard.pool)
    other = next(s.name for s in h.fleet.sites if s.name != home[0])
    # When a worker serving another site's pool receives it
    wrong = dataclasses.replace(h.runtime, serves=(other, "cpu"), worker_id="w-wrong")
    with caplog.at_level(logging.WARNING, logger="workers.execute"):
        outcome = wrong.run(shard_id, clock=lambda: max(first, T0))
    # Then it refuses with a clear log line and the shard stays queued, unclaimed, unattempted
    assert outcome.status == "refused"
    assert any(
        shard_id in r.getMessage() and f"serves {other}.cpu" in r.getMessage()
        for r in caplog.records
    )
    with h.sessions() as s:
        shard = s.get(Shard, shard_id)
        assert shard is not None
        assert (shard.status, shard.lease_owner, shard.attempts) == (ShardStatus.QUEUED, None, 0)
    # and the worker of its own pool then runs it
    right = dataclasses.replace(h.runtime, serves=home, worker_id="w-right")
    assert right.run(shard_id, clock=lambda: max(first, T0)).status == "done"
