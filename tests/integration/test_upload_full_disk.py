"""An upload on a full disk is a storage error (507 + Retry-After), and nothing is half-stored.

The data dir is a 2 MiB tmpfs filled to the last byte, the server real (uvicorn on a port), the
database PostgreSQL.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import requests
from conftest import fill_disk
from sqlalchemy import func, select

from scheduler.config import Settings
from scheduler.store.db import make_engine, session_factory
from scheduler.store.migrate import upgrade
from scheduler.store.tables import File
from scheduler.store.tenants import create_api_key
from tests.integration.api_harness import chat_line, running_server, write_fleet

pytestmark = pytest.mark.integration


def test_an_upload_on_a_full_disk_answers_507_and_stores_nothing(
    tmp_path: Path, small_disk: Path, fresh_pg_url: str
) -> None:
    engine = make_engine(fresh_pg_url)
    upgrade(engine)
    with session_factory(engine)() as s:
        key = create_api_key(s, f"acme-{uuid.uuid4().hex[:8]}")
        s.commit()
    data = small_disk / "data"
    settings = Settings(data_dir=data, database_url=fresh_pg_url, fleet=write_fleet(tmp_path))
    body = "".join(chat_line(f"r{i}") for i in range(200)).encode()  # about 20 KiB
    auth = {"Authorization": f"Bearer {key}"}
    try:
        with running_server(settings) as base:
            filler = fill_disk(small_disk)
            # When a file is uploaded while the data dir is full
            full = requests.post(
                f"{base}/v1/files",
                headers=auth,
                files={"file": ("in.jsonl", body)},
                data={"purpose": "batch"},
                timeout=30,
            )
            # Then it is a storage error the client can retry, not a generic 500
            assert full.status_code == 507, full.text
            error = full.json()["error"]
            assert error["code"] == "insufficient_storage" and "storage" in error["message"]
            assert int(full.headers["Retry-After"]) > 0
            # And nothing was half-stored: no row, no content, no temporary
            with session_factory(engine)() as s:
                assert s.scalar(select(func.count()).select_from(File)) == 0
            assert [p for p in data.rglob("*") if p.is_file()] == []
            # And once space returns the same upload is stored
            filler.unlink()
            again = requests.post(
                f"{base}/v1/files",
                headers=auth,
                files={"file": ("in.jsonl", body)},
                data={"purpose": "batch"},
                timeout=30,
            )
            assert again.status_code == 200, again.text
            assert again.json()["bytes"] == len(body)
    finally:
        engine.dispose()
