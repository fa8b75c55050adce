"""The embedded default across processes: SQLite database and SQLAlchemy broker, no server."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from e2e_helpers import (
    chat_line,
    plan_and_send_all,
    start_worker,
    stop_worker,
    wait_for,
    write_fleet,
)

from scheduler.config import Settings
from scheduler.dispatch.send import broker_url, celery_client, celery_sender
from scheduler.fleet import load_fleet
from scheduler.intake.submit import BatchOptions, create_batch
from scheduler.store.db import make_engine, session_factory
from scheduler.store.files import save_file
from scheduler.store.migrate import upgrade
from scheduler.store.tables import Batch
from scheduler.store.tenants import create_tenant

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_worker_process_runs_a_batch_over_the_sqlalchemy_broker_on_sqlite(
    tmp_path: Path, tiny_weights: Path, pinned_now: datetime
) -> None:
    # Given only a data directory: SQLite database and, with no broker URL, the SQL broker on it
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'data' / 'gridshift.db'}",
        fleet=write_fleet(tmp_path / "fleet.yaml", tiny_weights),
        max_shard_requests=4,
    )
    assert broker_url(settings).startswith("sqla+sqlite:")
    engine = make_engine(settings.database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    fleet = load_fleet(settings.fleet)  # type: ignore[arg-type]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(chat_line(f"e{i}")) + "\n" for i in range(6)))
    with sessions() as s:
        tenant = create_tenant(s, "local").id
        s.commit()
    with sessions() as s:
        f = save_file(
            s, settings.files_dir, path, tenant_id=tenant, filename="in.jsonl", purpose="batch"
        )
    with sessions() as s, s.begin():
        batch_id = create_batch(
            s,
            fleet,
            tenant,
            BatchOptions(input_file_id=f.id, endpoint="/v1/chat/completions"),
            max_requests=100,
        ).id
    worker = start_worker(settings, tmp_path / "worker.log")
    try:
        # When the dispatcher plans and sends the due shards by name over the embedded broker
        send = celery_sender(celery_client(settings))
        plan_and_send_all(sessions, settings, send, fleet, batch_id)

        # Then the worker process completes the batch
        def completed() -> bool:
            with sessions() as s:
                b = s.get(Batch, batch_id)
                return b is not None and b.status == "completed" and b.request_completed == 6

        wait_for(completed, 60, "the batch to complete over the embedded broker", every_s=0.5)
    finally:
        stop_worker(worker)
