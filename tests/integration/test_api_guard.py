"""The request guard against a real server on PostgreSQL: hostile bodies, limits, load, outages.

Bodies are pushed over a raw socket, chunk by chunk, so the test sees WHEN the server answers:
a refusal must come before the body is read, not after.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from scheduler.config import Settings
from scheduler.store.db import make_engine, session_factory
from scheduler.store.migrate import upgrade
from scheduler.store.tenants import create_api_key
from tests.integration.api_harness import chat_line, running_server, write_fleet

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


@dataclass
class Served:
    base_url: str
    key: str
    other_key: str
    settings: Settings

    def call(self, method: str, path: str, key: str | None = None, **kw: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {key or self.key}", **kw.pop("headers", {})}
        return requests.request(method, self.base_url + path, headers=headers, timeout=60, **kw)

    def upload(self, text: str, key: str | None = None) -> requests.Response:
        files = {"file": ("in.jsonl", text.encode())}
        return self.call("POST", "/v1/files", key=key, files=files, data={"purpose": "batch"})


def _keys(url: str) -> tuple[str, str]:
    engine = make_engine(url)
    upgrade(engine)
    with session_factory(engine)() as s:
        keys = (create_api_key(s, f"t-{uuid.uuid4().hex[:8]}") for _ in range(2))
        pair = (next(keys), next(keys))
        s.commit()
    engine.dispose()
    return pair


@pytest.fixture
def served(pg_url: str, tmp_path: Path) -> Iterator[Served]:
    """A real uvicorn server on PostgreSQL with small limits, and two tenants' keys."""
    key, other = _keys(pg_url)
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=pg_url,
        fleet=write_fleet(tmp_path),
        max_file_bytes=2 * MiB,
        max_json_bytes=64 * 1024,
        max_concurrent_requests=3,
        tenant_max_concurrent=2,
        queue_wait_s=30,
    )
    with running_server(settings) as base_url:
        yield Served(base_url, key, other, settings)


MULTIPART_START = (
    b'--x\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n'
    b"Content-Type: application/octet-stream\r\n\r\n"
)


def push(base_url: str, head: str, *, total: int, chunk: int = 64 * 1024) -> tuple[int, int]:
    """Send ``head`` then a chunked body of up to ``total`` bytes, stopping when the server
    answers (or stops reading). Return ``(status, bytes_sent)``.

    A multipart head gets a well-formed start of a file part, so the parser keeps reading."""
    parts = urlsplit(base_url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    sent = 0
    try:
        sock.sendall(head.encode() + b"\r\n")
        if "multipart" in head:
            sock.sendall(f"{len(MULTIPART_START):x}\r\n".encode() + MULTIPART_START + b"\r\n")
        piece = f"{chunk:x}\r\n".encode() + b"x" * chunk + b"\r\n"
        sock.settimeout(2)
        while sent < total:
            if select.select([sock], [], [], 0)[0]:
                break  # the answer is there: stop sending
            try:
                sock.sendall(piece)
            except (TimeoutError, OSError):
                break  # the server stopped reading
            sent += chunk
        sock.settimeout(10)
        answer = b""
        while b"\r\n" not in answer:
            data = sock.recv(4096)
            if not data:
                break
            answer += data
        return int(answer.split(b" ", 2)[1]), sent
    finally:
        sock.close()


def _head(path: str, served: Served, *, key: bool, content_type: str) -> str:
    host = urlsplit(served.base_url).netloc
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Type: {content_type}"]
    lines.append("Transfer-Encoding: chunked")
    if key:
        lines.append(f"Authorization: Bearer {served.key}")
    return "\r\n".join(lines) + "\r\n"


BODIES = [("/v1/batches", "application/json"), ("/v1/files", "multipart/form-data; boundary=x")]


def _stream_200mb(served: Served, *, key: bool) -> dict[str, tuple[int, int]]:
    """Stream 200 MB chunked at each of ``BODIES``; return path -> (status, bytes sent)."""
    return {
        path: push(
            served.base_url, _head(path, served, key=key, content_type=ctype), total=200 * MiB
        )
        for path, ctype in BODIES
    }


def test_a_chunked_body_without_key_is_refused_before_it_is_read(served: Served) -> None:
    # When an anonymous client streams 200 MB at POST /v1/batches and POST /v1/files
    for path, (status, sent) in _stream_200mb(served, key=False).items():
        # Then it gets a 401 while it has sent at most what socket buffers absorb
        assert status == 401, path
        assert sent < 32 * MiB, (path, sent)
    # and nothing was spooled into the data directory
    spooled = sum(p.stat().st_size for p in served.settings.data_dir.rglob("*") if p.is_file())
    assert spooled < MiB


def test_oversized_chunked_bodies_are_refused_as_soon_as_they_cross_the_limit(
    served: Served,
) -> None:
    # When a tenant streams 200 MB of JSON (limit 64 KiB) and of upload (limit 2 MiB)
    for path, (status, sent) in _stream_200mb(served, key=True).items():
        # Then the 413 arrives long before the body ends
        assert status == 413, path
        assert sent < 40 * MiB, (path, sent)
    # and a declared Content-Length over the limit is refused without reading
    big = served.call("POST", "/v1/batches", data=b"{" + b" " * 70_000 + b"}")
    assert big.status_code == 413
    assert big.json()["error"]["code"] == "request_too_large"


def test_nul_in_any_query_parameter_is_a_400_and_answers_carry_security_headers(
    served: Served,
) -> None:
    for path in (
        "/v1/forecasts/accuracy?site=%00",
        "/v1/batches?limit=1&after=a%00",
        "/healthz?x=%00",
    ):
        response = served.call("GET", path)
        assert response.status_code == 400, path
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    page = requests.get(served.base_url + "/dashboard", timeout=10)
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"
    # API docs load scripts from a CDN: off unless GRIDSHIFT_API_DOCS=true
    assert requests.get(served.base_url + "/docs", timeout=10).status_code == 404


def test_max_tokens_beyond_any_model_are_line_errors(served: Served) -> None:
    lines = [
        chat_line("ok", max_completion_tokens=256),
        chat_line("i32", max_completion_tokens=2**31),
        chat_line("i64", max_completion_tokens=2**63),
        chat_line("e30", max_tokens=10**30),
        chat_line("f53", max_tokens=2**53),
    ]
    file_id = served.upload("\n".join(lines) + "\n").json()["id"]
    body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions"}
    created = served.call("POST", "/v1/batches", json=body)
    assert created.status_code == 200, created.text
    batch = created.json()
    assert batch["status"] == "failed"
    errors = {e["line"]: e for e in batch["errors"]["data"]}
    assert sorted(errors) == [2, 3, 4, 5]
    assert all(e["param"].endswith("tokens") for e in errors.values())


def test_concurrent_creates_beyond_the_limits_get_429_or_wait_and_lose_nothing(
    served: Served,
) -> None:
    # Given a 2,000-request file
    text = "\n".join(chat_line(f"r{i}") for i in range(2000)) + "\n"
    file_id = served.upload(text).json()["id"]
    body = json.dumps({"input_file_id": file_id, "endpoint": "/v1/chat/completions"})
    barrier = threading.Barrier(16)

    def create(_: int) -> requests.Response:
        barrier.wait()
        return served.call(
            "POST", "/v1/batches", data=body, headers={"Content-Type": "application/json"}
        )

    # When one tenant sends 16 creates at once (it may have 2 in flight; the server runs 3)
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(create, range(16)))
        health = requests.get(served.base_url + "/healthz", timeout=30)
    statuses = sorted(a.status_code for a in answers)
    # Then no answer is a 5xx; refusals are 429 with Retry-After in OpenAI's envelope
    assert set(statuses) <= {200, 429}, statuses
    assert 200 in statuses and 429 in statuses, statuses
    for a in answers:
        if a.status_code == 429:
            assert int(a.headers["Retry-After"]) >= 1
            assert a.json()["error"]["code"] == "rate_limit_exceeded"
    assert health.status_code == 200
    # and every accepted batch is retrievable, with all its requests
    for a in answers:
        if a.status_code == 200:
            got = served.call("GET", f"/v1/batches/{a.json()['id']}").json()
            assert got["request_counts"]["total"] == 2000


def test_quotas_refuse_new_work_with_429(pg_url: str, tmp_path: Path) -> None:
    key, _ = _keys(pg_url)
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=pg_url,
        fleet=write_fleet(tmp_path),
        tenant_max_files=2,
        tenant_max_batches_in_flight=1,
    )
    with running_server(settings) as base_url:
        api = Served(base_url, key, key, settings)
        ids = [api.upload(chat_line("a") + "\n").json()["id"] for _ in range(2)]
        third = api.upload(chat_line("a") + "\n")
        assert third.status_code == 429 and third.headers["Retry-After"]
        assert "GRIDSHIFT_TENANT_MAX_FILES" in third.json()["error"]["message"]
        body = {"input_file_id": ids[0], "endpoint": "/v1/chat/completions"}
        assert api.call("POST", "/v1/batches", json=body).status_code == 200
        second = api.call("POST", "/v1/batches", json=body)
        assert second.status_code == 429
        assert second.json()["error"]["code"] == "quota_exceeded"


def test_a_lost_database_answers_503_with_retry_after(fresh_pg_url: str, tmp_path: Path) -> None:
    import psycopg

    from tests.conftest import PG_ADMIN_URL

    key, _ = _keys(fresh_pg_url)
    settings = Settings(data_dir=tmp_path / "data", database_url=fresh_pg_url)
    with running_server(settings) as base_url:
        api = Served(base_url, key, key, settings)
        assert api.call("GET", "/v1/batches").status_code == 200
        # When the database goes away under the running server
        name = fresh_pg_url.rsplit("/", 1)[1]
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        # Then requests get a 503 with Retry-After in OpenAI's envelope, not a plain-text 500
        for path in ("/v1/batches", "/v1/files"):
            response = api.call("GET", path)
            assert response.status_code == 503, (path, response.text)
            assert int(response.headers["Retry-After"]) >= 1
            assert response.json()["error"]["code"] == "store_unavailable"
        # and readiness says why, while liveness stays up (a probe must not restart the API)
        ready = api.call("GET", "/readyz")
        assert ready.status_code == 503 and int(ready.headers["Retry-After"]) >= 1
        assert ready.json()["error"]["code"] == "not_ready"
        assert ready.json()["checks"]["database"]["ok"] is False
        assert api.call("GET", "/healthz").json() == {"status": "ok"}


def test_admin_api_creates_lists_and_revokes_keys_at_once(pg_url: str, tmp_path: Path) -> None:
    key, _ = _keys(pg_url)
    admin = "gs-admin-" + uuid.uuid4().hex
    settings = Settings(data_dir=tmp_path / "data", database_url=pg_url, admin_key=admin)
    with running_server(settings) as base_url:
        api = Served(base_url, key, key, settings)
        # A tenant key cannot manage keys
        assert api.call("GET", "/v1/admin/keys").status_code == 403
        # When an admin creates a key for a new tenant
        tenant = f"new-{uuid.uuid4().hex[:6]}"
        made = api.call(
            "POST", "/v1/admin/keys", key=admin, json={"tenant": tenant, "expires_in_days": 30}
        )
        assert made.status_code == 200, made.text
        new = made.json()
        assert (
            new["key"].startswith(new["prefix"]) and new["expires_at"] and new["state"] == "active"
        )
        assert api.call("GET", "/v1/files", key=new["key"]).status_code == 200
        # Then the listing shows it without the secret
        listing = api.call("GET", f"/v1/admin/keys?tenant={tenant}", key=admin)
        assert [k["id"] for k in listing.json()["data"]] == [new["id"]]
        assert new["key"] not in listing.text
        # When it is revoked, the very next call with it is refused
        gone = api.call("DELETE", f"/v1/admin/keys/{new['id']}", key=admin)
        assert gone.status_code == 200 and gone.json()["state"] == "revoked"
        refused = api.call("GET", "/v1/files", key=new["key"])
        assert refused.status_code == 401 and "revoked" in refused.json()["error"]["message"]
        assert api.call("DELETE", "/v1/admin/keys/key_nope", key=admin).status_code == 404


def test_a_body_that_never_arrives_gets_a_504_after_the_timeout(
    pg_url: str, tmp_path: Path
) -> None:
    key, _ = _keys(pg_url)
    settings = Settings(data_dir=tmp_path / "data", database_url=pg_url, request_timeout_s=1.0)
    with running_server(settings) as base_url:
        parts = urlsplit(base_url)
        # When a client announces 100 bytes of JSON and sends none (slowloris)
        with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
            sock.sendall(
                (
                    f"POST /v1/batches HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                    f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
                    "Content-Length: 100\r\n\r\n"
                ).encode()
            )
            answer = b""
            while not answer.endswith(b"}"):  # the JSON body may come in its own packet
                data = sock.recv(4096)
                if not data:
                    break
                answer += data
        # Then the server gives up on it after the timeout with a 504 in OpenAI's envelope
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.split(b" ")[1] == b"504"
        assert json.loads(body)["error"]["code"] == "timeout"
