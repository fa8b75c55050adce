"""/metrics as Prometheus sums it: two API replicas and the dispatcher's exporter on one database.

Real uvicorn servers over real HTTP on PostgreSQL. The replicas run with
``GRIDSHIFT_METRICS_STORE=false`` (as docker-compose.yml sets them) and the dispatcher's exporter
carries the store families, so a sum over every scrape target counts each batch once; each
replica carries its own process and per-route HTTP series.
"""

from __future__ import annotations

import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from scheduler.config import Settings
from scheduler.dispatch.exporter import DispatchState, dispatcher_registry, start_exporter
from scheduler.store.db import make_engine, session_factory
from scheduler.store.migrate import upgrade
from scheduler.store.tenants import create_api_key
from tests.integration.api_harness import chat_line, free_port, running_server, write_fleet

pytestmark = pytest.mark.integration


def _samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Samples of ``name`` in an exposition text, keyed by their sorted labels."""
    out: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def _sum(texts: list[str], name: str, **labels: str) -> float:
    """Sum of ``name`` over every target's text, for samples carrying ``labels``."""
    total = 0.0
    for text in texts:
        for key, value in _samples(text, name).items():
            if all((k, v) in key for k, v in labels.items()):
                total += value
    return total


@pytest.fixture
def own_pg_url(fresh_pg_url: str) -> str:
    """A migrated PostgreSQL database of this test's own (the session's shared one may gain
    other tests' batches while the counts are compared)."""
    engine = make_engine(fresh_pg_url)
    upgrade(engine)
    engine.dispose()
    return fresh_pg_url


@pytest.fixture
def replicas(own_pg_url: str, tmp_path: Path) -> Iterator[tuple[list[str], str]]:
    """Two API replicas (store families off) on one PostgreSQL database, and a tenant key."""
    pg_url = own_pg_url
    engine = make_engine(pg_url)
    with session_factory(engine)() as s:
        key = create_api_key(s, f"metrics-{uuid.uuid4().hex[:8]}")
        s.commit()
    engine.dispose()
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=pg_url,
        fleet=write_fleet(tmp_path),
        metrics_store=False,
    )
    with running_server(settings) as a, running_server(settings) as b:
        yield [a, b], key


def test_sum_over_replicas_and_exporter_counts_each_batch_once(
    replicas: tuple[list[str], str], own_pg_url: str
) -> None:
    pg_url = own_pg_url
    # Given two replicas and the dispatcher's exporter on one database
    (url_a, url_b), key = replicas
    engine = make_engine(pg_url)
    state = DispatchState()
    port = free_port()
    server = start_exporter(
        dispatcher_registry(session_factory(engine), state),
        state,
        host="127.0.0.1",
        port=port,
        stale_after_s=60,
    )
    exporter = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {key}"}
    try:
        with httpx.Client(headers=headers, timeout=30) as http:
            before = [http.get(f"{u}/metrics").text for u in (url_a, url_b, exporter)]
            # When one batch is created through replica A
            body = (chat_line("r1") + "\n").encode()
            file_id = http.post(
                f"{url_a}/v1/files",
                files={"file": ("a.jsonl", body)},
                data={"purpose": "batch"},
            ).json()["id"]
            created = http.post(
                f"{url_a}/v1/batches",
                json={
                    "input_file_id": file_id,
                    "endpoint": "/v1/chat/completions",
                    "completion_window": "24h",
                },
            )
            assert created.status_code == 200, created.text
            # and replica B answers a read of it
            assert http.get(f"{url_b}/v1/batches/{created.json()['id']}").status_code == 200
            after = [http.get(f"{u}/metrics").text for u in (url_a, url_b, exporter)]
    finally:
        server.shutdown()
        server.server_close()
        engine.dispose()

    # Then summing gridshift_batches over every target grows by exactly one batch
    assert _sum(after, "gridshift_batches") - _sum(before, "gridshift_batches") == 1.0
    # and the replicas export no store family at all (only the exporter does)
    assert not _samples(after[0], "gridshift_batches")
    assert not _samples(after[1], "gridshift_batches")
    # and each replica counts its own HTTP requests by route template, method and status
    create = {"handler": "/v1/batches", "method": "POST", "status": "200"}
    assert _sum([after[0]], "http_requests_total", **create) == 1.0
    assert _sum([after[1]], "http_requests_total", **create) == 0.0
    read = {"handler": "/v1/batches/{batch_id}", "method": "GET", "status": "200"}
    assert _sum([after[1]], "http_requests_total", **read) == 1.0
    assert _sum([after[0]], "http_request_duration_seconds_count", **create) == 1.0
    assert _sum([after[0]], "http_request_duration_seconds_bucket", le="+Inf", **create) == 1.0
    # and the process families Python dashboards read are there on every target
    for text in after:
        assert _samples(text, "process_cpu_seconds_total")
        assert _samples(text, "python_info")


def test_dispatcher_healthz_follows_its_ticks() -> None:
    # Given an exporter whose dispatcher has not ticked yet, with a zero staleness allowance
    state = DispatchState()
    port = free_port()
    server = start_exporter(
        dispatcher_registry(None, state), state, host="127.0.0.1", port=port, stale_after_s=0.0
    )
    url = f"http://127.0.0.1:{port}"
    try:
        # Then /healthz is 503 (stale) until a tick succeeds
        with pytest.raises(urllib.error.HTTPError) as stale:
            urllib.request.urlopen(f"{url}/healthz", timeout=5)
        assert stale.value.code == 503
        # When a tick fails, it is counted but the exporter stays stale
        state.record(RuntimeError("database unreachable"))
        server_text = urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()
        assert _samples(server_text, "gridshift_dispatch_ticks_total") == {
            (("outcome", "ok"),): 0.0,
            (("outcome", "failed"),): 1.0,
        }
        # When the staleness allowance covers the last good tick, it is healthy
        state.record()
        server.shutdown()
        server.server_close()
        server = start_exporter(
            dispatcher_registry(None, state), state, host="127.0.0.1", port=port, stale_after_s=60
        )
        answer = urllib.request.urlopen(f"{url}/healthz", timeout=5)
        assert answer.status == 200
        assert b'"ticks_ok": 1' in answer.read()
    finally:
        server.shutdown()
        server.server_close()
