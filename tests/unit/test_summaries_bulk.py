"""``batch_summaries`` builds every batch's ``gridshift`` summary with a constant number of queries."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from scheduler.store.summaries import batch_summaries, batch_summary
from scheduler.store.tables import (
    AssignmentRecord,
    Batch,
    BatchPart,
    File,
    LedgerEntry,
    PlanRecord,
    Shard,
)
from tests.review_seed import Seeded, seed_review_store

EXTRA_BATCHES = 12  # on top of the review seed's 8: 20 batches in all


@contextmanager
def counted_statements(engine: Engine) -> Iterator[list[str]]:
    """Record every SQL statement the engine sends while the block runs."""
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(args[2])

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def _add_extra_batches(sessions: sessionmaker[Session], seeded: Seeded) -> list[str]:
    """Batches with 0-2 parts, some planned (current and old plan), sharded and in the ledger."""
    ids = [f"batch_extra_{i:02d}" for i in range(EXTRA_BATCHES)]
    with sessions() as s, s.begin():
        old_plan_id = s.scalar(select(PlanRecord.id).where(PlanRecord.is_current.is_(False)))
        tenant = seeded.tenant_ids["acme"]
        for i, bid in enumerate(ids):
            s.add(
                File(
                    id=f"file_{bid}",
                    tenant_id=tenant,
                    filename=f"{bid}.jsonl",
                    purpose="batch",
                    bytes=1,
                    sha256="0" * 64,
                    path="/dev/null",
                    created_at=int(seeded.now.timestamp()),
                )
            )
            s.flush()
            s.add(
                Batch(
                    id=bid,
                    tenant_id=tenant,
                    endpoint="/v1/chat/completions",
                    input_file_id=f"file_{bid}",
                    completion_window="24h",
                    status="in_progress",
                    created_at=int(seeded.now.timestamp()) + i,
                    request_total=10 + i,
                    deadline=seeded.now + timedelta(hours=6 + i),
                    min_quality=0.5 if i % 2 else None,
                    sites=["gb-london"] if i % 3 == 0 else None,
                    priority=1.0 + i / 10,
                )
            )
            for k in reversed(range(i % 3)):  # inserted out of id order
                s.add(
                    BatchPart(
                        id=f"{bid}~m{k}",
                        batch_id=bid,
                        model=None if k else "llama-3.1-8b-instruct",
                        min_quality=None,
                        requests=5 + k,
                        input_tokens=100.0 * (k + 1),
                        output_tokens=50.0 * (k + 1),
                        tokens_estimated=bool(k),
                    )
                )
            s.flush()
            for plan_id in (seeded.plan_id, old_plan_id)[: 1 + i % 2] if i % 4 else ():
                a = AssignmentRecord(
                    plan_id=plan_id,
                    batch_id=bid,
                    part_id=f"{bid}~m0",
                    site="se-lulea",
                    pool="a100",
                    model="llama-3.1-8b-instruct",
                    slot_start=seeded.now + timedelta(hours=i % 5),
                    requests=3,
                    input_tokens=30,
                    output_tokens=15,
                    gpu_hours=0.2,
                    energy_kwh=0.1 * (i + 1),
                    co2_g=3.0 * (i + 1),
                    cost=0.01 * i,
                    water_l=0.2,
                    carbon_g_per_kwh=30.0,
                )
                s.add(a)
                s.flush()
                if plan_id == seeded.plan_id and i % 3 != 2:
                    retried = i == 1  # a retry estimated after a measured attempt: "mixed"
                    _add_shard_and_entry(
                        s, bid, tenant, a, seeded, market=i % 2 == 0, attempts=2 if retried else 1
                    )
    return ids


def _add_shard_and_entry(
    s: Session,
    bid: str,
    tenant: str,
    a: AssignmentRecord,
    seeded: Seeded,
    *,
    market: bool,
    attempts: int,
) -> None:
    s.add(
        Shard(
            id=f"shard_{bid}",
            batch_id=bid,
            part_id=a.part_id,
            plan_id=a.plan_id,
            assignment_id=a.id,
            site=a.site,
            pool=a.pool,
            model=a.model,
            slot_start=a.slot_start,
            status="done",
            request_count=a.requests,
            created_at=seeded.now,
        )
    )
    for attempt in range(1, attempts + 1):
        _add_entry(s, bid, tenant, a, seeded, market=market, attempt=attempt)


def _add_entry(
    s: Session,
    bid: str,
    tenant: str,
    a: AssignmentRecord,
    seeded: Seeded,
    *,
    market: bool,
    attempt: int,
) -> None:
    s.add(
        LedgerEntry(
            batch_id=bid,
            shard_id=f"shard_{bid}",
            attempt=attempt,
            tenant_id=tenant,
            site=a.site,
            pool=a.pool,
            model=a.model,
            started_at=seeded.now,
            ended_at=seeded.now,
            requests_done=a.requests if attempt == 1 else 0,
            requests_failed=0 if attempt == 1 else a.requests,
            input_tokens=30,
            output_tokens=15,
            gpu_hours=0.2,
            it_energy_kwh=0.09,
            facility_energy_kwh=0.1,
            energy_method="measured-rapl" if attempt == 1 else "estimated",
            renewable_share=0.0,
            grid_kwh=0.1,
            carbon_g_per_kwh=30.0,
            carbon_source="actual",
            co2_location_g=3.0,
            co2_market_g=2.5 if market else None,
            embodied_co2_g=0.4,
            water_onsite_l=0.1,
            water_offsite_l=0.05,
            cost=0.02,
            created_at=seeded.now,
        )
    )


@pytest.fixture
def twenty_batches(sessions: sessionmaker[Session], pinned_now: datetime) -> list[str]:
    seeded = seed_review_store(sessions, now=pinned_now)
    ids = list(seeded.batch_tenant) + _add_extra_batches(sessions, seeded)
    assert len(ids) == 20
    return ids


def test_bulk_summaries_equal_the_single_batch_summary_of_every_batch(
    sessions: sessionmaker[Session], twenty_batches: list[str]
) -> None:
    # Given 20 batches with parts, current and old plans, shards and ledger entries
    # When all are summarised at once, and then one by one in fresh sessions
    with sessions() as s:
        bulk = batch_summaries(s, reversed(twenty_batches))
    single = {}
    for bid in twenty_batches:
        with sessions() as s:
            single[bid] = batch_summary(s, bid)
    # Then every bulk summary is exactly the single one
    assert sorted(bulk) == sorted(twenty_batches)
    for bid in twenty_batches:
        assert bulk[bid] == single[bid], bid
    # And the comparison covered every kind of content, not only empty summaries
    assert any(x["parts"] for x in bulk.values())
    assert any(x["planned"]["slots"] for x in bulk.values())
    assert any(not x["planned"]["slots"] for x in bulk.values())
    assert any(x["shards"] for x in bulk.values())
    assert any(x["actual"]["co2_market_g"] is not None for x in bulk.values())
    assert {x["energy_method"] for x in bulk.values()} >= {None, "mixed", "measured-rapl"}


def test_bulk_summaries_keep_each_batchs_rows_to_itself(
    sessions: sessionmaker[Session], twenty_batches: list[str]
) -> None:
    # Given 20 batches whose rows share the same tables
    with sessions() as s:
        # When all are summarised at once
        bulk = batch_summaries(s, twenty_batches)
        # Then each summary counts exactly that batch's parts, current-plan slots, shards, entries
        plan_id = s.scalar(select(PlanRecord.id).where(PlanRecord.is_current.is_(True)))
        for bid in twenty_batches:
            parts = s.scalars(select(BatchPart.id).where(BatchPart.batch_id == bid)).all()
            slots = s.scalars(
                select(AssignmentRecord.id).where(
                    AssignmentRecord.batch_id == bid, AssignmentRecord.plan_id == plan_id
                )
            ).all()
            shards = s.scalars(select(Shard.id).where(Shard.batch_id == bid)).all()
            entries = s.scalars(select(LedgerEntry.id).where(LedgerEntry.batch_id == bid)).all()
            assert [p["id"] for p in bulk[bid]["parts"]] == sorted(parts)
            assert len(bulk[bid]["planned"]["slots"]) == len(slots)
            assert sum(bulk[bid]["shards"].values()) == len(shards)
            assert bulk[bid]["actual"]["entries"] == len(entries)


def test_bulk_summaries_take_the_same_number_of_queries_for_one_or_twenty_batches(
    sessions: sessionmaker[Session], sqlite_engine: Engine, twenty_batches: list[str]
) -> None:
    # Given 20 batches
    # When one, then all 20 are summarised, each in a fresh session, counting SQL statements
    counts = []
    for ids in (twenty_batches[:1], twenty_batches):
        with sessions() as s, counted_statements(sqlite_engine) as statements:
            batch_summaries(s, ids)
        counts.append(len(statements))
    # Then both took the same few statements
    assert counts[0] == counts[1] <= 9, counts  # 9: token usage per model (batch.usage)


def test_bulk_summaries_name_a_missing_batch_and_accept_no_ids(
    sessions: sessionmaker[Session], twenty_batches: list[str]
) -> None:
    # Given 20 batches
    with sessions() as s:
        # When a batch that does not exist is asked for among them, Then its id is the error
        with pytest.raises(KeyError, match="batch_nope"):
            batch_summaries(s, [*twenty_batches[:3], "batch_nope"])
        # And asking for no batch gives no summary
        assert batch_summaries(s, []) == {}
