"""End to end on real parts: openai client -> API (uvicorn) -> PostgreSQL -> tick -> Redis -> Celery worker process."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from celery_events import receiving_events
from e2e_helpers import (
    api_server,
    chat_line,
    migrated_settings,
    plan_and_send_all,
    start_worker,
    stop_worker,
    submit_batch,
    wait_for,
    worker_env,
)
from sqlalchemy import func, select

from scheduler.config import Settings
from scheduler.dispatch.send import celery_client, celery_sender
from scheduler.fleet import load_fleet
from scheduler.store.db import make_engine, session_factory
from scheduler.store.ledger import ledger_totals
from scheduler.store.tables import Execution, LedgerEntry, Shard
from scheduler.store.tenants import create_api_key

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def e2e_settings(
    tmp_path: Path, fresh_pg_url: str, redis_url: str, tiny_weights: Path
) -> Iterator[Settings]:
    yield migrated_settings(
        tmp_path,
        fresh_pg_url,
        redis_url,
        tiny_weights,
        max_shard_requests=5,
        lease_s=10,
        heartbeat_s=2,
    )


def test_openai_client_batch_completes_on_a_celery_worker_and_the_ledger_matches_the_batch(
    e2e_settings: Settings, tmp_path: Path, pinned_now: datetime
) -> None:
    from openai import OpenAI

    settings = e2e_settings
    sessions = session_factory(make_engine(settings.database_url))
    with sessions() as s, s.begin():
        key = create_api_key(s, "e2e")
    # Given a real worker process on the pool's queue and the API on 127.0.0.1
    worker = start_worker(settings, tmp_path / "worker.log")
    try:
        with receiving_events(settings.broker_url) as events, api_server(settings) as url:
            client = OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=30)
            # When the official client submits 12 requests and one over the model's context
            good = [f"q{i}" for i in range(12)]
            lines = [chat_line(c) for c in good] + [chat_line("too-long", "word " * 400)]
            batch = submit_batch(client, lines)
            # and the dispatcher plans, then ticks with a clock at which the whole plan is due
            fleet = load_fleet(settings.fleet)  # type: ignore[arg-type]
            send = celery_sender(celery_client(settings))
            report, _ = plan_and_send_all(sessions, settings, send, fleet, batch.id)
            assert report.plan_id is not None
            done = wait_for(
                lambda: (b := client.batches.retrieve(batch.id)).status == "completed" and b,
                60,
                "the batch to complete",
                every_s=0.5,
            )
            # Then the output file holds exactly one line per good custom_id
            out = [
                json.loads(x) for x in client.files.content(done.output_file_id).text.splitlines()
            ]
            assert Counter(x["custom_id"] for x in out) == Counter(good)
            assert all(x["response"]["status_code"] == 200 for x in out)
            # and the error file holds the request the engine refused
            err = [
                json.loads(x) for x in client.files.content(done.error_file_id).text.splitlines()
            ]
            assert [x["custom_id"] for x in err] == ["too-long"]
            assert err[0]["response"]["status_code"] == 400
            assert (done.request_counts.completed, done.request_counts.failed) == (12, 1)
            # and the ledger's sums are the batch's own gridshift figures
            actual = done.model_extra["gridshift"]["actual"]
            with sessions() as s:
                totals = ledger_totals(s, batch_id=batch.id)
                shards = s.scalar(select(func.count(Shard.id)).where(Shard.batch_id == batch.id))
                rows = s.scalar(
                    select(func.count(LedgerEntry.id)).where(LedgerEntry.batch_id == batch.id)
                )
            assert rows == shards == totals.executions
            assert totals.requests_done == 12 and totals.requests_failed == 1
            assert actual["energy_kwh"] == pytest.approx(totals.facility_energy_kwh)
            assert actual["co2_g"] == pytest.approx(totals.co2_g)
            assert actual["co2_market_g"] == pytest.approx(totals.co2_market_g)
            assert actual["water_l"] == pytest.approx(totals.water_l)
            assert actual["cost"] == pytest.approx(totals.cost)
            assert totals.facility_energy_kwh > 0 and totals.co2_market_g is not None
            # and a Celery event receiver (what Flower runs) saw every shard's task go through
            # sent -> received -> started -> succeeded, on the worker the executions name
            succeeded = wait_for(
                lambda: (
                    len(events.by_type("task-succeeded")) >= shards
                    and events.by_type("task-succeeded")
                ),
                15,
                "every shard's task-succeeded event",
            )
            for event in succeeded:
                kinds = events.of_task(event["uuid"])
                assert kinds[:1] == ["task-sent"], kinds
                assert {"task-received", "task-started", "task-succeeded"} <= set(kinds), kinds
            sent_names = {e["name"] for e in events.by_type("task-sent")}
            assert sent_names == {"gridshift.run_shard"}
            with sessions() as s:
                owners = set(
                    s.scalars(
                        select(Execution.worker).join(Shard).where(Shard.batch_id == batch.id)
                    )
                )
            assert owners == {e["hostname"] for e in succeeded}
            # and the compose healthcheck's ping finds this pool's worker, and no other pool's
            exe = Path(sys.executable).parent / "gridshift"
            env = worker_env(settings)
            ping = [str(exe), "ping-worker", "--site", "e2e-site", "--timeout-s", "5"]
            alive = subprocess.run([*ping, "--pool", "cpu"], env=env, capture_output=True)
            assert alive.returncode == 0, alive.stderr
            other = subprocess.run([*ping, "--pool", "gpu"], env=env, capture_output=True)
            assert other.returncode == 1 and b"no worker of e2e-site.gpu" in other.stderr
    finally:
        stop_worker(worker)
