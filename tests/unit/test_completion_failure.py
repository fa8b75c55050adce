"""A database error in the worker's completion transaction releases the shard at once.

The error is a real one: an SQLite trigger aborts the ledger insert, so the transaction that
marks the shard done rolls back exactly as it would on a dropped connection or a full disk.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import Settings
from scheduler.store.tables import Execution, LedgerEntry, Shard
from tests.unit.execution_helpers import T0, chat_line, make_harness
from workers.engines.echo import EchoEngine


def test_a_failed_completion_releases_the_shard_with_its_cause_and_cleans_its_files(
    tmp_path: Path, settings: Settings, sessions: sessionmaker[Session]
) -> None:
    h = make_harness(
        settings, sessions, tmp_path / "no-weights", engine_factory=lambda _c: EchoEngine()
    )
    h.submit([chat_line(f"r{i}") for i in range(3)], tmp=tmp_path)
    h.tick(T0)
    with h.sessions() as s:
        first = s.scalar(select(func.min(Shard.slot_start)))
    assert first is not None
    now = max(first, T0)
    shard_id = h.tick(now, allow_replan=False).queued[0]
    # Given the database refuses the ledger row of the completion transaction
    with sessions() as s, s.begin():
        s.execute(
            text(
                "CREATE TRIGGER refuse_ledger BEFORE INSERT ON ledger_entries "
                "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
            )
        )
    # When the worker finishes the shard
    outcome = h.runtime.run(shard_id, clock=lambda: now)
    # Then the shard is released at once (queued, not running until its lease expires)
    assert outcome.status == "released"
    with sessions() as s:
        shard = s.get(Shard, shard_id)
        assert shard is not None
        assert shard.status == "queued" and shard.lease_owner is None
        assert "completion transaction failed" in (shard.last_error or "")
        assert "disk full" in (shard.last_error or "")
        execution = s.scalars(select(Execution).where(Execution.shard_id == shard_id)).one()
        assert execution.status == "failed"  # not "lost"
        assert s.scalar(select(func.count()).select_from(LedgerEntry)) == 0
    # and the attempt's files are gone
    leftovers = [p for p in settings.data_dir.rglob(f"*{shard_id}*") if p.is_file()]
    assert leftovers == []
    # When the database accepts writes again, the next attempt books exactly once
    with sessions() as s, s.begin():
        s.execute(text("DROP TRIGGER refuse_ledger"))
    later = now + timedelta(minutes=1)
    assert h.runtime.run(shard_id, clock=lambda: later).status == "done"
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(LedgerEntry)) == 1
