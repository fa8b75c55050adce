"""Tenant limits shared by two API servers on one PostgreSQL (and one Redis): the tenant gets
its limit once across both, not once per server; a revoked key is refused by both at once."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
import requests

from scheduler.config import Settings
from tests.integration.api_harness import free_port, running_server, write_fleet
from tests.integration.test_api_guard import _keys

pytestmark = pytest.mark.integration

PER_MINUTE = 20


def _two(stack: ExitStack, settings: Settings) -> list[str]:
    return [stack.enter_context(running_server(settings)) for _ in range(2)]


def _store_settings(store: str, pg_url: str, tmp_path: Path, redis: str, **kw: int) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=pg_url,
        fleet=write_fleet(tmp_path),
        limits_store=store,
        limits_redis_url=redis if store == "redis" else "",
        **kw,
    )


@pytest.fixture(params=["redis", "database"])
def store(request: pytest.FixtureRequest) -> tuple[str, str]:
    if request.param == "redis":
        return "redis", request.getfixturevalue("redis_url")
    return "database", ""


def test_the_rate_limit_holds_across_two_servers(
    store: tuple[str, str], pg_url: str, tmp_path: Path
) -> None:
    key, _ = _keys(pg_url)
    settings = _store_settings(
        store[0], pg_url, tmp_path, store[1], tenant_requests_per_minute=PER_MINUTE
    )
    with ExitStack() as stack:
        urls = _two(stack, settings)
        headers = {"Authorization": f"Bearer {key}"}
        # When one tenant sends 3 x its per-minute limit, alternating between the servers
        granted = 0
        for i in range(3 * PER_MINUTE):
            answer = requests.get(urls[i % 2] + "/v1/models", headers=headers, timeout=30)
            assert answer.status_code in (200, 429), answer.text
            granted += answer.status_code == 200
        # Then it got at most its limit (+5 % and the refill during the loop), not twice it
        assert PER_MINUTE <= granted <= PER_MINUTE * 1.05 + 2, granted


def test_the_in_flight_cap_holds_across_two_servers(
    store: tuple[str, str], pg_url: str, tmp_path: Path
) -> None:
    key, _ = _keys(pg_url)
    settings = _store_settings(
        store[0], pg_url, tmp_path, store[1], tenant_max_concurrent=2, request_timeout_s=30
    )
    with ExitStack() as stack:
        urls = _two(stack, settings)
        headers = {"Authorization": f"Bearer {key}"}
        barrier = threading.Barrier(12)

        def one(i: int) -> int:
            barrier.wait()
            # a slow upload holds its turn while its body trickles in
            body = (b"x" * 1024 for _ in range(4) if time.sleep(0.4) is None)
            files_head = {**headers, "Content-Type": "multipart/form-data; boundary=zz"}
            answer = requests.post(
                urls[i % 2] + "/v1/files", headers=files_head, data=body, timeout=60
            )
            return answer.status_code

        with ThreadPoolExecutor(12) as pool:
            statuses = list(pool.map(one, range(12)))
        # Then at most 2 were let in at once across both servers; the rest were 429s
        assert statuses.count(429) >= 12 - 2 - 2, statuses  # 2 turns, +2 that came after
        assert set(statuses) <= {400, 429}, statuses  # 400: the body is not a valid form


def test_a_revoked_key_is_refused_by_both_servers_within_a_second(
    pg_url: str, tmp_path: Path
) -> None:
    key, _ = _keys(pg_url)
    admin = "gs-admin-shared-limits-test"
    settings = _store_settings("database", pg_url, tmp_path, "")
    settings = settings.model_copy(update={"admin_key": admin})
    with ExitStack() as stack:
        urls = _two(stack, settings)
        made = requests.post(
            urls[0] + "/v1/admin/keys",
            headers={"Authorization": f"Bearer {admin}"},
            json={"tenant": "revoked-both"},
            timeout=30,
        ).json()
        new = {"Authorization": f"Bearer {made['key']}"}
        assert all(requests.get(u + "/v1/files", headers=new, timeout=30).ok for u in urls)
        gone = requests.delete(
            urls[1] + f"/v1/admin/keys/{made['id']}",
            headers={"Authorization": f"Bearer {admin}"},
            timeout=30,
        )
        revoked_at = time.monotonic()
        assert gone.status_code == 200
        for u in urls:
            assert requests.get(u + "/v1/files", headers=new, timeout=30).status_code == 401
        assert time.monotonic() - revoked_at < 1.0


@contextmanager
def _serve_processes(settings: Settings, n: int, tmp_path: Path) -> Iterator[list[str]]:
    """``n`` real ``gridshift serve`` processes on ``settings`` (as replicas run them)."""
    env = {
        **os.environ,
        "GRIDSHIFT_DATABASE_URL": settings.database_url,
        "GRIDSHIFT_DATA_DIR": str(settings.data_dir),
        "GRIDSHIFT_FLEET": str(settings.fleet),
        "GRIDSHIFT_LIMITS_STORE": settings.limits_store,
        "GRIDSHIFT_LIMITS_REDIS_URL": settings.limits_redis_url,
        "GRIDSHIFT_TENANT_REQUESTS_PER_MINUTE": str(settings.tenant_requests_per_minute),
    }
    exe = Path(sys.executable).with_name("gridshift")
    procs, urls = [], []
    try:
        for i in range(n):
            port = free_port()
            log = (tmp_path / f"serve{i}.log").open("wb")
            procs.append(
                subprocess.Popen(
                    [str(exe), "serve", "--port", str(port), "--no-upgrade-db"],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            urls.append(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 60
        for proc, url in zip(procs, urls, strict=True):
            while True:
                try:
                    if requests.get(url + "/healthz", timeout=2).ok:
                        break
                except requests.ConnectionError:
                    pass
                assert proc.poll() is None and time.monotonic() < deadline, url
                time.sleep(0.2)
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_two_gridshift_serve_processes_share_the_rate_limit(
    pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    # Given two `gridshift serve` replicas (separate processes) on one PostgreSQL and one Redis
    key, _ = _keys(pg_url)
    settings = _store_settings(
        "redis", pg_url, tmp_path, redis_url, tenant_requests_per_minute=PER_MINUTE
    )
    with _serve_processes(settings, 2, tmp_path) as urls:
        headers = {"Authorization": f"Bearer {key}"}
        # When one tenant sends 3 x its per-minute limit, alternating between the replicas
        statuses = [
            requests.get(urls[i % 2] + "/v1/models", headers=headers, timeout=30).status_code
            for i in range(3 * PER_MINUTE)
        ]
    # Then the tenant got its limit once (+5 % and the refill during the loop), not twice
    assert set(statuses) <= {200, 429}, statuses
    assert PER_MINUTE <= statuses.count(200) <= PER_MINUTE * 1.05 + 2, statuses
