"""Store-level guarantees of intake: nothing accepted is lost, nothing half-written stays, keys."""

from __future__ import annotations

import hashlib
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import Settings
from scheduler.domain import Fleet, ShardStatus
from scheduler.errors import InvalidTransition, LimitExceeded, Unauthenticated
from scheduler.fleet import load_fleet
from scheduler.intake.submit import BatchOptions, create_batch
from scheduler.store import files as repo
from scheduler.store.batches import cancel_batch, get_batch
from scheduler.store.summaries import batch_summary
from scheduler.store.tables import (
    ApiKey,
    AssignmentRecord,
    Batch,
    BatchPart,
    BatchRequest,
    File,
    LedgerEntry,
    PlanRecord,
    Shard,
)
from scheduler.store.tenants import create_api_key, create_tenant, resolve_key, revoke_key
from tests.integration.api_harness import CHAT, chat_line, running_server, write_fleet

pytestmark = pytest.mark.integration
NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)  # data stamps only: no product clock reads them


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    return load_fleet(write_fleet(tmp_path))


@pytest.fixture
def tenant_id(sessions: sessionmaker[Session]) -> str:
    with sessions() as s:
        tid = create_tenant(s, "acme").id
        s.commit()
    return tid


def content_files(settings: Settings) -> list[str]:
    d = settings.files_dir
    names = [p.name for p in d.iterdir() if p.is_file()] if d.is_dir() else []
    tmp = d / repo.TMP_DIR
    return names + ([f".tmp/{p.name}" for p in tmp.iterdir()] if tmp.is_dir() else [])


def save(sessions: sessionmaker[Session], settings: Settings, tenant: str, data: bytes) -> File:
    with sessions() as s:
        return repo.save_file(
            s, settings.files_dir, [data], tenant_id=tenant, filename="in.jsonl", purpose="batch"
        )


def test_a_file_whose_row_cannot_be_inserted_leaves_no_row_and_no_content(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    # Given a tenant id that does not exist (the foreign key makes the insert fail)
    # When a file is saved for it
    with pytest.raises(IntegrityError):
        save(sessions, settings, "tenant_missing", b"hello\n" * 1000)
    # Then there is no row, no content and no temporary file
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(File)) == 0
    assert content_files(settings) == []


def test_an_oversized_file_is_refused_and_leaves_nothing(
    sessions: sessionmaker[Session], settings: Settings, tenant_id: str
) -> None:
    with sessions() as s, pytest.raises(LimitExceeded, match="GRIDSHIFT_MAX_FILE_BYTES"):
        repo.save_file(
            s,
            settings.files_dir,
            [b"x" * 600, b"y" * 600],
            tenant_id=tenant_id,
            filename="big",
            purpose="batch",
            max_bytes=1000,
        )
    assert content_files(settings) == []


def test_saved_file_has_content_hash_and_size(
    sessions: sessionmaker[Session], settings: Settings, tenant_id: str
) -> None:
    data = os.urandom(3 * repo.CHUNK_BYTES + 17)
    row = save(sessions, settings, tenant_id, data)
    assert row.bytes == len(data) and row.sha256 == hashlib.sha256(data).hexdigest()
    assert repo.content_path(row).read_bytes() == data
    assert content_files(settings) == [row.id]


def test_a_failed_batch_creation_leaves_no_batch_and_the_file_intact(
    sessions: sessionmaker[Session], settings: Settings, tenant_id: str, fleet: Fleet
) -> None:
    # Given an uploaded file, and a store whose batch_requests insert will fail
    data = ("\n".join(chat_line(f"r{i}") for i in range(20)) + "\n").encode()
    file = save(sessions, settings, tenant_id, data)
    with sessions() as s:
        s.execute(text("ALTER TABLE batch_requests RENAME TO batch_requests_away"))
        s.commit()
    # When the batch is created (batch row and parts are written before the failing insert)
    with sessions() as s, pytest.raises(OperationalError):
        create_batch(s, fleet, tenant_id, BatchOptions(file.id, CHAT), max_requests=100)
        s.commit()
    # Then no batch or part exists and the file is still there, byte for byte
    with sessions() as s:
        s.execute(text("ALTER TABLE batch_requests_away RENAME TO batch_requests"))
        s.commit()
        assert s.scalar(select(func.count()).select_from(Batch)) == 0
        assert s.scalar(select(func.count()).select_from(BatchPart)) == 0
        again = repo.get_file(s, tenant_id, file.id)
    assert repo.content_path(again).read_bytes() == data
    # And the same file still makes a good batch afterwards
    with sessions() as s:
        batch = create_batch(s, fleet, tenant_id, BatchOptions(file.id, CHAT), max_requests=100)
        s.commit()
        assert batch.status == "in_progress"
        assert s.scalar(select(func.count()).select_from(BatchRequest)) == 20


def test_startup_sweep_removes_leftovers_of_crashes_but_not_live_files(
    sessions: sessionmaker[Session], settings: Settings, tenant_id: str
) -> None:
    # Given a live file, a staged temp file (crash before rename) and content without a row
    # (crash between rename and insert)
    live = save(sessions, settings, tenant_id, b"live\n")
    staged = repo.stage_content(settings.files_dir, [b"half"])
    orphan = settings.files_dir / "file-0000crashed"
    orphan.write_bytes(b"orphan")
    # When the sweep runs with a grace period, Then fresh leftovers are spared
    with sessions() as s:
        assert repo.sweep_files(s, settings.files_dir, grace_s=3600) == repo.SweepReport()
        # When it runs with no grace, Then both leftovers go and the live file stays
        report = repo.sweep_files(s, settings.files_dir, grace_s=0)
    assert (report.temp_removed, report.orphans_removed) == (1, 1)
    assert not staged.tmp_path.exists() and not orphan.exists()
    assert content_files(settings) == [live.id]


def test_deleting_the_input_of_a_running_batch_is_refused_until_the_batch_ends(
    sessions: sessionmaker[Session], settings: Settings, tenant_id: str, fleet: Fleet
) -> None:
    # Given an in-progress batch reading its input file
    file = save(sessions, settings, tenant_id, (chat_line("a") + "\n").encode())
    with sessions() as s:
        batch = create_batch(s, fleet, tenant_id, BatchOptions(file.id, CHAT), max_requests=10)
        s.commit()
        # When the client deletes the file, Then it is refused naming the batch, and kept
        with pytest.raises(InvalidTransition, match=rf"input of batch {batch.id}.*in_progress"):
            repo.delete_file(s, tenant_id, file.id)
        s.rollback()
        assert repo.get_file(s, tenant_id, file.id).deleted is False
        assert repo.content_path(file).exists()
        # When the batch ends, Then the delete succeeds and the content goes
        cancel_batch(s, tenant_id, batch.id)
        s.commit()
        row = repo.delete_file(s, tenant_id, file.id)
        s.commit()
        assert repo.purge_content(s, row) is True
    assert not repo.content_path(row).exists()


def _shard(batch_id: str, sid: str, status: ShardStatus) -> Shard:
    return Shard(
        id=sid,
        batch_id=batch_id,
        part_id=f"{batch_id}~tiny-chat",
        site="site-a",
        pool="cpu",
        model="tiny-chat",
        slot_start=NOW,
        status=status.value,
        request_count=1,
        created_at=NOW,
    )


def test_cancel_waits_for_a_running_shard_and_cancels_shards_not_started(
    sessions: sessionmaker[Session], settings: Settings, tenant_id: str, fleet: Fleet
) -> None:
    # Given a batch with one planned, one queued and one running shard
    file = save(sessions, settings, tenant_id, (chat_line("a") + "\n").encode())
    with sessions() as s:
        batch = create_batch(s, fleet, tenant_id, BatchOptions(file.id, CHAT), max_requests=10)
        s.add_all(
            [
                _shard(batch.id, "sh-p", ShardStatus.PLANNED),
                _shard(batch.id, "sh-q", ShardStatus.QUEUED),
                _shard(batch.id, "sh-r", ShardStatus.RUNNING),
            ]
        )
        s.commit()
        # When it is cancelled
        cancel_batch(s, tenant_id, batch.id)
        s.commit()
        # Then it is cancelling, the shards not started are cancelled, the running one is not
        b = get_batch(s, tenant_id, batch.id)
        assert b.status == "cancelling" and b.cancelling_at and b.cancelled_at is None
        statuses = dict(s.execute(select(Shard.id, Shard.status)).all())
        assert statuses == {"sh-p": "cancelled", "sh-q": "cancelled", "sh-r": "running"}
        # When the running shard ends and cancel is asked again, Then the batch is cancelled
        s.get(Shard, "sh-r").status = ShardStatus.DONE.value  # type: ignore[union-attr]
        cancel_batch(s, tenant_id, batch.id)
        s.commit()
        assert get_batch(s, tenant_id, batch.id).status == "cancelled"
        with pytest.raises(InvalidTransition, match="cannot become cancelling"):
            cancel_batch(s, tenant_id, batch.id)


def test_keys_are_stored_hashed_resolve_to_their_tenant_and_can_be_revoked(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as s:
        key = create_api_key(s, "acme")
        admin = create_api_key(s, "ops", admin=True)
        s.commit()
        assert key.startswith("gs-") and len(key) > 40 and key != admin
        stored = s.scalars(select(ApiKey)).all()
        assert all(key not in (k.key_sha256, k.prefix) for k in stored)
        tenant, is_admin = resolve_key(s, key)
        assert (tenant.name, is_admin) == ("acme", False)
        assert resolve_key(s, admin)[1] is True
        assert revoke_key(s, key[:10]) == 1
        s.commit()
        with pytest.raises(Unauthenticated):
            resolve_key(s, key)
        with pytest.raises(Unauthenticated):
            resolve_key(s, key + "x")


def test_batch_summary_reports_the_current_plan_and_the_ledger(
    sessions: sessionmaker[Session], settings: Settings, tenant_id: str, fleet: Fleet
) -> None:
    # Given a batch, an old and a current plan, and two ledger rows measured differently
    file = save(
        sessions, settings, tenant_id, (chat_line("a") + "\n" + chat_line("b") + "\n").encode()
    )
    with sessions() as s:
        batch = create_batch(s, fleet, tenant_id, BatchOptions(file.id, CHAT), max_requests=10)
        empty = batch_summary(s, batch.id)
        plans = []
        for current in (False, True):
            plan = PlanRecord(
                created_at=NOW,
                trigger="test",
                status="optimal",
                objectives=["carbon"],
                tolerances=[0.0],
                totals={},
                baselines={},
                unplaced=[],
                stage_optima=None,
                notes=None,
                solve_s=0.1,
                horizon_start=NOW,
                horizon_end=NOW + timedelta(hours=24),
                is_current=current,
            )
            s.add(plan)
            s.flush()
            plans.append(plan)
        for plan, site, kwh in (
            (plans[0], "site-a", 99.0),
            (plans[1], "site-b", 0.25),
            (plans[1], "site-b", 0.5),
        ):
            s.add(
                AssignmentRecord(
                    plan_id=plan.id,
                    batch_id=batch.id,
                    part_id=f"{batch.id}~tiny-chat",
                    site=site,
                    pool="cpu",
                    model="tiny-chat",
                    slot_start=NOW + timedelta(hours=3 if kwh == 0.5 else 2),
                    requests=1,
                    input_tokens=10,
                    output_tokens=20,
                    gpu_hours=0.1,
                    energy_kwh=kwh,
                    co2_g=kwh * 100,
                    cost=kwh * 0.2,
                    water_l=kwh * 2,
                    carbon_g_per_kwh=100.0,
                )
            )
        for attempt, method in ((1, "measured-nvml"), (2, "estimated")):
            s.add(
                LedgerEntry(
                    batch_id=batch.id,
                    shard_id="sh-1",
                    attempt=attempt,
                    tenant_id=tenant_id,
                    site="site-b",
                    pool="cpu",
                    model="tiny-chat",
                    started_at=NOW,
                    ended_at=NOW,
                    requests_done=1,
                    requests_failed=0,
                    input_tokens=10,
                    output_tokens=20,
                    gpu_hours=0.1,
                    it_energy_kwh=0.2,
                    facility_energy_kwh=0.22,
                    energy_method=method,
                    renewable_share=0.0,
                    grid_kwh=0.22,
                    carbon_g_per_kwh=100.0,
                    carbon_source="test",
                    co2_location_g=22.0,
                    co2_market_g=None,
                    embodied_co2_g=1.0,
                    water_onsite_l=0.1,
                    water_offsite_l=0.3,
                    cost=0.05,
                    created_at=NOW,
                )
            )
        s.commit()
        summary = batch_summary(s, batch.id)
    # Then before anything was planned or run, everything was empty and unlabelled
    assert empty["planned"]["slots"] == [] and empty["planned"]["energy_kwh"] == 0.0
    assert empty["energy_method"] is None and empty["actual"]["entries"] == 0
    # And now only the current plan counts, in slot order, labelled an estimate
    planned = summary["planned"]
    assert planned["plan_id"] == plans[1].id and planned["estimated"] is True
    assert planned["sites"] == ["site-b"] and planned["energy_kwh"] == pytest.approx(0.75)
    assert [x["energy_kwh"] for x in planned["slots"]] == [0.25, 0.5]
    assert planned["first_slot_at"] == int((NOW + timedelta(hours=2)).timestamp())
    # And the ledger totals are summed, with mixed methods labelled "mixed"
    actual = summary["actual"]
    assert summary["energy_method"] == "mixed" and actual["entries"] == 2
    assert actual["energy_kwh"] == pytest.approx(0.44) and actual["co2_g"] == pytest.approx(46.0)
    # market-based by the one rule: rows without a market figure count their location-based one
    assert actual["water_l"] == pytest.approx(0.8) and actual["co2_market_g"] == pytest.approx(44.0)
    assert [p["requests"] for p in summary["parts"]] == [2]


def test_the_app_sweeps_crash_leftovers_when_it_starts(
    sqlite_engine: object, settings: Settings, tmp_path: Path
) -> None:
    # Given a day-old temporary upload and a day-old content file without a row
    tmp_dir = settings.files_dir / repo.TMP_DIR
    tmp_dir.mkdir(parents=True)
    leftovers = [tmp_dir / "dead.part", settings.files_dir / "file-0000deadbeef"]
    day_ago = time.time() - 86_400
    for p in leftovers:
        p.write_bytes(b"partial")
        os.utime(p, (day_ago, day_ago))
    # When the server starts
    with running_server(settings.model_copy(update={"fleet": write_fleet(tmp_path)})):
        pass
    # Then both are gone
    assert [p.exists() for p in leftovers] == [False, False]
