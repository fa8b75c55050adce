"""Fault test: a worker process killed (SIGKILL) mid-shard; the lease expires, the work is redone once."""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from e2e_helpers import (
    api_server,
    chat_line,
    migrated_settings,
    plan_and_send_all,
    start_worker,
    stop_worker,
    submit_batch,
    wait_for,
)
from sqlalchemy import func, select

from scheduler.config import Settings
from scheduler.dispatch.send import celery_client, celery_sender
from scheduler.dispatch.tick import tick
from scheduler.fleet import load_fleet
from scheduler.store.db import make_engine, session_factory
from scheduler.store.ledger import ledger_totals
from scheduler.store.tables import Batch, Execution, LedgerEntry, Shard, now_utc
from scheduler.store.tenants import create_api_key

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]

N = 16


@pytest.fixture
def e2e_settings(
    tmp_path: Path, fresh_pg_url: str, redis_url: str, tiny_weights: Path
) -> Iterator[Settings]:
    yield migrated_settings(
        tmp_path,
        fresh_pg_url,
        redis_url,
        tiny_weights,
        max_shard_requests=N // 2,
        lease_s=4,
        heartbeat_s=1,
    )


def test_killed_worker_shard_is_rerun_and_every_request_and_joule_is_counted_once(
    e2e_settings: Settings, tmp_path: Path, pinned_now: datetime
) -> None:
    from openai import OpenAI

    settings = e2e_settings
    sessions = session_factory(make_engine(settings.database_url))
    with sessions() as s, s.begin():
        key = create_api_key(s, "e2e")
    fleet = load_fleet(settings.fleet)  # type: ignore[arg-type]
    send = celery_sender(celery_client(settings))
    first = start_worker(settings, tmp_path / "worker1.log")
    second = None
    try:
        with api_server(settings) as url:
            # Given two slow shards (long generations) sent to a real worker process
            client = OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=30)
            ids = [f"k{i}" for i in range(N)]
            batch = submit_batch(client, [chat_line(c, max_tokens=96) for c in ids])
            plan_and_send_all(sessions, settings, send, fleet, batch.id)

            def running_with_heartbeat() -> str | None:
                with sessions() as s:
                    sh = s.scalars(select(Shard).where(Shard.status == "running")).first()
                    ok = (
                        sh is not None
                        and sh.heartbeat_at
                        and sh.started_at
                        and sh.heartbeat_at > sh.started_at
                    )
                    return sh.id if ok and sh is not None else None

            victim = wait_for(
                running_with_heartbeat, 60, "a shard to be running with a heartbeat", every_s=0.1
            )
            # When the worker is killed with SIGKILL in the middle of it, and another one starts
            os.kill(first.pid, signal.SIGKILL)
            first.wait(10)
            with sessions() as s:
                assert s.get(Shard, victim).status == "running"  # type: ignore[union-attr]
            second = start_worker(settings, tmp_path / "worker2.log")

            # and the dispatcher keeps ticking on the real clock until the lease is found expired
            def tick_until_done() -> bool:
                tick(sessions, settings, now_utc(), send, fleet=fleet, allow_replan=False)
                with sessions() as s:
                    return s.get(Batch, batch.id).status == "completed"  # type: ignore[union-attr]

            wait_for(tick_until_done, 90, "the batch to complete after the kill", every_s=1.0)
            # Then every custom_id is in the output exactly once
            done = client.batches.retrieve(batch.id)
            assert done.output_file_id and done.request_counts and done.model_extra
            out = [
                json.loads(x) for x in client.files.content(done.output_file_id).text.splitlines()
            ]
            assert Counter(x["custom_id"] for x in out) == Counter(ids)
            assert done.request_counts.completed == N
            with sessions() as s:
                attempts = {
                    e.attempt: e.status
                    for e in s.scalars(select(Execution).where(Execution.shard_id == victim))
                }
                booked = list(s.scalars(select(LedgerEntry).where(LedgerEntry.shard_id == victim)))
                shards = s.scalar(select(func.count(Shard.id)).where(Shard.batch_id == batch.id))
                totals = ledger_totals(s, batch_id=batch.id)
            # and the killed attempt is recorded as lost with no energy; only the finishing one books
            assert attempts[1] == "lost" and attempts[max(attempts)] == "done"
            assert [le.attempt for le in booked] == [max(attempts)]
            assert totals.executions == shards and totals.requests_done == N
            assert done.model_extra["gridshift"]["actual"]["energy_kwh"] == pytest.approx(
                totals.facility_energy_kwh
            )
    finally:
        stop_worker(first)
        if second is not None:
            stop_worker(second)
