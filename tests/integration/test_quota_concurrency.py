"""Quotas under real concurrency on PostgreSQL: a burst of creates, on one server or two
servers sharing the database, never keeps more than the quota."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pytest
import requests

from scheduler.config import Settings
from tests.integration.api_harness import chat_line, running_server, write_fleet
from tests.integration.test_api_guard import Served, _keys

pytestmark = pytest.mark.integration

BURST = 30


def _settings(pg_url: str, tmp_path: Path, **limits: int) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=pg_url,
        fleet=write_fleet(tmp_path),
        tenant_max_concurrent=BURST,  # the burst meets the quota, not the in-flight cap
        queue_wait_s=60,
        **limits,
    )


def _burst(apis: list[Served], call: str, arg: str) -> list[requests.Response]:
    barrier = threading.Barrier(BURST)

    def one(i: int) -> requests.Response:
        api = apis[i % len(apis)]
        barrier.wait()
        if call == "upload":
            return api.upload(chat_line(f"r{i}") + "\n")
        body = {"input_file_id": arg, "endpoint": "/v1/chat/completions"}
        return api.call("POST", "/v1/batches", json=body)

    with ThreadPoolExecutor(BURST) as pool:
        return list(pool.map(one, range(BURST)))


@pytest.mark.parametrize("replicas", [1, 2])
def test_a_burst_of_creates_keeps_exactly_the_batch_quota(
    pg_url: str, tmp_path: Path, replicas: int
) -> None:
    key, _ = _keys(pg_url)
    settings = _settings(pg_url, tmp_path, tenant_max_batches_in_flight=5)
    with ExitStack() as stack:
        apis = [
            Served(stack.enter_context(running_server(settings)), key, key, settings)
            for _ in range(replicas)
        ]
        file_id = apis[0].upload(chat_line("a") + "\n").json()["id"]
        # When 30 creates of one tenant arrive at once (quota: 5 batches in flight)
        answers = _burst(apis, "batch", file_id)
        statuses = sorted(a.status_code for a in answers)
        # Then exactly 5 are accepted and the rest are quota refusals, not errors
        assert statuses.count(200) == 5, statuses
        assert statuses.count(429) == BURST - 5, statuses
        codes = {a.json()["error"]["code"] for a in answers if a.status_code == 429}
        assert codes == {"quota_exceeded"}
        listed = apis[0].call("GET", "/v1/batches?limit=100").json()["data"]
        assert len(listed) == 5


@pytest.mark.parametrize("replicas", [1, 2])
def test_a_burst_of_uploads_keeps_exactly_the_file_quota(
    pg_url: str, tmp_path: Path, replicas: int
) -> None:
    key, _ = _keys(pg_url)
    settings = _settings(pg_url, tmp_path, tenant_max_files=5)
    with ExitStack() as stack:
        apis = [
            Served(stack.enter_context(running_server(settings)), key, key, settings)
            for _ in range(replicas)
        ]
        # When 30 uploads of one tenant arrive at once (quota: 5 files)
        answers = _burst(apis, "upload", "")
        statuses = sorted(a.status_code for a in answers)
        # Then exactly 5 files are kept, and nothing of the refused ones stays on disk
        assert statuses.count(200) == 5, statuses
        assert statuses.count(429) == BURST - 5, statuses
        kept = apis[0].call("GET", "/v1/files").json()["data"]
        assert len(kept) == 5
        on_disk = [p for p in settings.files_dir.iterdir() if p.is_file()]
        assert len(on_disk) == 5, on_disk
