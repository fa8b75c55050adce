"""Background ``validating`` (SQLite and PostgreSQL) and the retention sweep."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import Settings
from scheduler.dispatch.retention import sweep_retention
from scheduler.domain import Fleet
from scheduler.errors import NotFound
from scheduler.intake.pending import validate_all_pending, validate_pending
from scheduler.intake.submit import BatchOptions, create_batch
from scheduler.samples import load_sample_fleet
from scheduler.store import files as repo
from scheduler.store.batches import cancel_batch
from scheduler.store.db import make_engine, session_factory
from scheduler.store.tables import Batch, BatchPart, BatchRequest, File, Shard, now_utc
from scheduler.store.tenants import create_tenant

pytestmark = pytest.mark.integration

CHAT = "/v1/chat/completions"
FLEET: Fleet = load_sample_fleet()


def chat(cid: str, model: str = "gpt-4o-mini") -> str:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    return json.dumps({"custom_id": cid, "method": "POST", "url": CHAT, "body": body})


@pytest.fixture(params=["sqlite", "postgresql"])
def db(
    request: pytest.FixtureRequest, sessions: sessionmaker[Session]
) -> Iterator[sessionmaker[Session]]:
    if request.param == "sqlite":
        yield sessions
        return
    engine = make_engine(request.getfixturevalue("pg_url"))
    yield session_factory(engine)
    engine.dispose()


def submit(db: sessionmaker[Session], settings: Settings, lines: list[str]) -> tuple[str, str]:
    with db() as s:
        tenant = create_tenant(s, f"t-{os.urandom(4).hex()}").id
        s.commit()
    with db() as s:
        f = repo.save_file(
            s,
            settings.files_dir,
            [("\n".join(lines) + "\n").encode()],
            tenant_id=tenant,
            filename="in.jsonl",
            purpose="batch",
        )
    with db() as s:
        b = create_batch(
            s, FLEET, tenant, BatchOptions(f.id, CHAT), max_requests=100, sync_max_bytes=0
        )
        s.commit()
        assert b.status == "validating" and b.in_progress_at is None and b.request_total == 0
        return tenant, b.id


def counts(db: sessionmaker[Session], batch_id: str) -> tuple[int, int]:
    with db() as s:
        reqs = s.scalar(select(func.count()).where(BatchRequest.batch_id == batch_id))
        parts = s.scalar(select(func.count()).where(BatchPart.batch_id == batch_id))
        return int(reqs or 0), int(parts or 0)


def test_a_large_file_is_validated_after_the_answer_and_only_once(
    db: sessionmaker[Session], settings: Settings
) -> None:
    # Given a batch left validating (its file is above the synchronous threshold)
    _, batch_id = submit(db, settings, [chat("a"), chat("b", "tiny-chat"), chat("c")])
    assert counts(db, batch_id) == (0, 0)
    # When the background validation runs, Then it is in progress with its requests and parts
    assert validate_pending(db, FLEET, batch_id, max_requests=100) is True
    with db() as s:
        b = s.get(Batch, batch_id)
        assert b is not None
        assert (b.status, b.request_total, b.model) == ("in_progress", 3, None)
        assert b.in_progress_at is not None
    assert counts(db, batch_id) == (3, 2)  # auto@0.4 (gpt-4o-mini) and tiny-chat
    # And a second validator (the tick) stores nothing more
    assert validate_pending(db, FLEET, batch_id, max_requests=100) is False
    assert counts(db, batch_id) == (3, 2)


def test_a_bad_large_file_fails_in_the_background_with_its_line_errors(
    db: sessionmaker[Session], settings: Settings
) -> None:
    _, batch_id = submit(db, settings, [chat("a"), chat("b", "gpt-9"), "{not json"])
    assert validate_pending(db, FLEET, batch_id, max_requests=100) is True
    with db() as s:
        b = s.get(Batch, batch_id)
        assert b is not None and b.status == "failed" and b.failed_at is not None
        assert b.errors is not None
        assert [(e["line"], e["code"]) for e in b.errors["data"]] == [
            (2, "model_not_found"),
            (3, "invalid_json_line"),
        ]
    assert counts(db, batch_id) == (0, 0)


def test_a_batch_cancelled_while_validating_stays_cancelled(
    db: sessionmaker[Session], settings: Settings
) -> None:
    tenant, batch_id = submit(db, settings, [chat("a")])
    with db() as s:
        assert cancel_batch(s, tenant, batch_id).status == "cancelled"
        s.commit()
    assert validate_pending(db, FLEET, batch_id, max_requests=100) is False
    with db() as s:
        assert s.get(Batch, batch_id).status == "cancelled"  # type: ignore[union-attr]
    assert counts(db, batch_id) == (0, 0)


def test_the_tick_finishes_batches_left_validating_after_a_grace(
    db: sessionmaker[Session], settings: Settings
) -> None:
    # Given a batch whose API process died before validating it
    _, batch_id = submit(db, settings, [chat("a")])
    # When the tick looks within the grace, Then it leaves it to the API's own task
    assert batch_id not in validate_all_pending(db, FLEET, max_requests=100, grace_s=3600)
    # When the grace has passed, Then the tick validates it
    assert batch_id in validate_all_pending(db, FLEET, max_requests=100, grace_s=-5)
    with db() as s:
        assert s.get(Batch, batch_id).status == "in_progress"  # type: ignore[union-attr]


def test_retention_expires_files_keeps_inputs_in_use_and_removes_leftovers(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    # Given an expired spare file, the expired input of a running batch, and leftovers
    tenant, batch_id = submit(sessions, settings, [chat("a")])
    validate_pending(sessions, FLEET, batch_id, max_requests=100)
    with sessions() as s:
        spare = repo.save_file(
            s,
            settings.files_dir,
            [b"x\n"],
            tenant_id=tenant,
            filename="s",
            purpose="batch",
            expires_after_s=3600,
        )
        batch = s.get(Batch, batch_id)
        assert batch is not None
        used = s.get(File, batch.input_file_id)
        assert used is not None and used.expires_at is None  # saved without a policy here
        used.expires_at = spare.expires_at
        s.commit()
    later = float(spare.expires_at or 0) + 1
    old_part = settings.files_dir / ".tmp" / "dead.part"
    fresh_part = settings.files_dir / ".tmp" / "live.part"
    shards = settings.data_dir / "shards"
    shards.mkdir(parents=True)
    old_tmp = shards / ".s1.a1.out.jsonl.123.tmp"
    running = shards / "shard-run.a1.out.jsonl"
    finished = [shards / "shard-done.a1.out.jsonl", shards / "shard-done.a2.err.jsonl"]
    for p in (old_part, fresh_part, old_tmp, running, *finished):
        p.write_text("{}\n")
    for p in (old_part, old_tmp):  # 3 h old; the bound is 2 h, the sweep runs 1 h from now
        os.utime(p, (time.time() - 3 * 3600, time.time() - 3 * 3600))
    settings = settings.model_copy(update={"part_file_max_age_s": 2 * 3600})
    with sessions() as s:
        _, done_id = submit(sessions, settings, [chat("z")])
        validate_pending(sessions, FLEET, done_id, max_requests=100)
        for sid, bid in (("shard-run", batch_id), ("shard-done", done_id)):
            s.add(
                Shard(
                    id=sid,
                    batch_id=bid,
                    part_id=f"{bid}~x",
                    site="gb-london",
                    pool="cpu",
                    model="tiny-chat",
                    slot_start=now_utc(),
                    status="done",
                    request_count=1,
                    created_at=now_utc(),
                    output_path=str(shards / f"{sid}.a1.out.jsonl"),
                )
            )
        s.commit()
    with sessions() as s:
        cancel_batch(s, None, done_id)  # a finalised batch
        s.commit()
    # When the sweep runs after the expiry
    report = sweep_retention(sessions, settings, now_s=later)
    # Then the spare file expired (content gone, 404 says so), the input in use stays
    assert report.files_expired == [spare.id]
    assert not Path(spare.path).exists() and Path(used.path).exists()
    with sessions() as s:
        with pytest.raises(NotFound, match="expired at"):
            repo.get_file(s, tenant, spare.id)
        assert repo.get_file(s, tenant, used.id).status == "processed"
        assert s.get(Shard, "shard-done").output_path is None  # type: ignore[union-attr]
        assert s.get(Shard, "shard-run").output_path is not None  # type: ignore[union-attr]
    # and per-shard files of the finalised batch and old crash leftovers are gone, the rest kept
    assert report.shard_files_removed == 2 and not any(p.exists() for p in finished)
    assert running.exists() and fresh_part.exists()
    assert report.leftovers_removed == 2 and not old_part.exists() and not old_tmp.exists()
    # When the running batch finishes, Then its expired input goes at the next sweep
    with sessions() as s:
        cancel_batch(s, None, batch_id)
        s.commit()
    assert sweep_retention(sessions, settings, now_s=later).files_expired == [used.id]
