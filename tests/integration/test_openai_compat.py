"""A hosted-API user switches by changing ``base_url``: the official openai client, unchanged
request files naming hosted models, the sample fleet, real HTTP, SQLite and PostgreSQL.

The service runs as in the README's service path (API server; dispatcher tick; a worker on the
``transformers`` engine), with the tick and the worker driven in-process on a simulated clock
so planned slots run back to back. ``test_airflow_openai_hook_calls`` makes exactly the calls
Airflow's ``OpenAIHook`` makes (``models.list`` for "test connection", ``files.create``,
``batches.create`` with only the standard fields, polling ``batches.retrieve``,
``files.content``): the Airflow provider itself needs the whole of Airflow, so its calls are
driven with the openai client it wraps.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import OpenAI
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion
from openai.types.responses import Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import Settings
from scheduler.dispatch.retention import FINALISED_GRACE_S, sweep_retention
from scheduler.dispatch.tick import tick
from scheduler.domain import Fleet
from scheduler.forecasts.synthetic import synthetic_signals
from scheduler.samples import load_sample_fleet
from scheduler.store.db import make_engine, session_factory
from scheduler.store.migrate import upgrade
from scheduler.store.tables import Shard, now_utc
from scheduler.store.tenants import create_api_key
from tests.integration.api_harness import running_server
from workers.engine_cache import EngineCache
from workers.runtime import WorkerRuntime

pytestmark = pytest.mark.integration

TERMINAL = {"completed", "failed", "expired", "cancelled"}


@dataclass
class Service:
    base_url: str
    key: str
    settings: Settings
    sessions: sessionmaker[Session]
    runtime: WorkerRuntime
    tmp: Path

    def client(self) -> OpenAI:
        return OpenAI(base_url=f"{self.base_url}/v1", api_key=self.key, max_retries=0, timeout=60)

    def upload(self, client: OpenAI, name: str, lines: list[dict[str, Any]], **kw: Any) -> str:
        path = self.tmp / name
        path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
        with path.open("rb") as f:
            return client.files.create(file=f, purpose="batch", **kw).id

    def run_until_done(self, client: OpenAI, batch_ids: list[str]) -> None:
        """Wait out ``validating`` (background), then tick and run shards slot after slot."""
        deadline = time.monotonic() + 60
        while any(client.batches.retrieve(b).status == "validating" for b in batch_ids):
            assert time.monotonic() < deadline, "batches stayed validating"
            time.sleep(0.1)
        fleet = self.runtime.fleet
        now = now_utc()
        signals = synthetic_signals(fleet, now - timedelta(hours=2), 96)
        self.runtime.signal_lookup = lambda site, slot: (
            (signals[(site, slot)], "synthetic") if (site, slot) in signals else None
        )

        def signals_for(_f: Any, slots: tuple[datetime, ...], _n: datetime) -> Any:
            return {k: v for k, v in signals.items() if k[1] in set(slots)}

        sent: list[str] = []
        clock = now
        for _ in range(100):
            tick(
                self.sessions,
                self.settings,
                clock,
                lambda _n, shard_id, queue: sent.append(shard_id),
                fleet=fleet,
                signals_for=signals_for,
            )
            while sent:
                at = clock
                self.runtime.run(sent.pop(0), clock=lambda at=at: at)
            if all(client.batches.retrieve(b).status in TERMINAL for b in batch_ids):
                return
            with self.sessions() as s:
                nxt = s.scalar(
                    select(func.min(Shard.slot_start)).where(
                        Shard.batch_id.in_(batch_ids), Shard.status == "planned"
                    )
                )
            clock = max(clock + timedelta(minutes=1), nxt or clock)
        raise AssertionError("batches did not finish")


@contextmanager
def serve(settings: Settings, fleet: Fleet, cache: EngineCache, tmp: Path) -> Iterator[Service]:
    """Migrate ``settings``' database, make a key, serve the API and wire an in-process worker."""
    engine = make_engine(settings.resolved_database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    with sessions() as s:
        key = create_api_key(s, f"hosted-{uuid.uuid4().hex[:8]}")
        s.commit()
    runtime = WorkerRuntime(
        settings=settings, fleet=fleet, sessions=sessions, engine_cache=cache, worker_id="w1"
    )
    try:
        with running_server(settings) as base_url:
            yield Service(base_url, key, settings, sessions, runtime, tmp)
    finally:
        cache.close()
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def service(
    request: pytest.FixtureRequest, tmp_path: Path, tiny_model_dir: Path
) -> Iterator[Service]:
    """The API on the sample fleet (validation always in the background), and a worker."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'svc.db'}"
    else:
        url = request.getfixturevalue("fresh_pg_url")
    settings = Settings(
        data_dir=tmp_path / "data", database_url=url, fleet=None, validate_sync_max_bytes=0
    )
    fleet = load_sample_fleet()
    cache = EngineCache(weights_override={m.name: str(tiny_model_dir) for m in fleet.models})
    with serve(settings, fleet, cache, tmp_path) as svc:
        yield svc


def chat(cid: str, model: str) -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": f"Hi {cid}"}], "max_tokens": 4}
    return {"custom_id": cid, "method": "POST", "url": "/v1/chat/completions", "body": body}


def embedding(cid: str, model: str, text: str | list[str]) -> dict[str, Any]:
    body = {"model": model, "input": text}
    return {"custom_id": cid, "method": "POST", "url": "/v1/embeddings", "body": body}


def response(cid: str, model: str) -> dict[str, Any]:
    body = {"model": model, "input": f"Summarise {cid}", "instructions": "Be brief."}
    body["max_output_tokens"] = 4
    return {"custom_id": cid, "method": "POST", "url": "/v1/responses", "body": body}


def output_lines(client: OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id is not None
    text = client.files.content(file_id).text
    return [json.loads(x) for x in text.splitlines() if x.strip()]


def usage_sum(lines: list[dict[str, Any]]) -> tuple[int, int]:
    tokens_in = tokens_out = 0
    for ln in lines:
        u = ln["response"]["body"]["usage"]
        tokens_in += u.get("prompt_tokens", u.get("input_tokens", 0))
        tokens_out += u.get("completion_tokens", u.get("output_tokens", 0))
    return tokens_in, tokens_out


def test_airflow_openai_hook_calls(service: Service) -> None:
    client = service.client()
    # "Test connection": models.list() shows the fleet's models and the hosted aliases
    ids = {m.id for m in client.models.list()}
    assert {"tiny-chat", "tiny-embed", "auto", "gpt-4o-mini", "text-embedding-3-small"} <= ids
    assert client.models.retrieve("gpt-4o-mini").model_extra["gridshift"]["alias_of"] == "auto"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-9")
    # upload_file + create_batch with only the standard fields (no extra_body)
    file_id = service.upload(client, "chat.jsonl", [chat(f"c{i}", "gpt-4o-mini") for i in range(3)])
    batch = client.batches.create(
        input_file_id=file_id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"dag_id": "nightly"},
    )
    # OpenAI's first status: large files (here: every file) are validated in the background
    assert batch.status == "validating" and batch.model is None
    service.run_until_done(client, [batch.id])
    # wait_for_batch: polling retrieve until a terminal status
    done = client.batches.retrieve(batch.id)
    assert done.status == "completed", done.errors
    lines = output_lines(client, done.output_file_id)
    assert len(lines) == 3
    models = {ln["response"]["body"]["model"] for ln in lines}
    assert models <= {"tiny-chat", "tiny-chat-mini"}  # the real model, not the hosted name
    for ln in lines:
        ChatCompletion.model_validate(ln["response"]["body"])
    assert done.model in models
    assert done.usage is not None
    assert (done.usage.input_tokens, done.usage.output_tokens) == usage_sum(lines)
    assert done.usage.total_tokens == sum(usage_sum(lines))
    used = done.model_extra["gridshift"]["models"]
    assert {m["model"] for m in used} == models
    assert sum(m["requests"] for m in used) == 3


def test_embeddings_and_responses_batches_complete_with_openais_shapes_and_expiry(
    service: Service,
) -> None:
    client = service.client()
    emb_file = service.upload(
        client,
        "emb.jsonl",
        [
            embedding("e1", "text-embedding-3-small", "the grid is clean at night"),
            embedding("e2", "text-embedding-3-large", ["solar noon", "wind at dawn"]),
        ],
        expires_after={"anchor": "created_at", "seconds": 3600},
    )
    info = client.files.retrieve(emb_file)
    assert info.expires_at == info.created_at + 3600
    resp_file = service.upload(
        client, "resp.jsonl", [response("r1", "gpt-4o"), response("r2", "gpt-4o-mini")]
    )
    info = client.files.retrieve(resp_file)
    assert info.expires_at == info.created_at + 30 * 86400  # OpenAI's default for batch files
    emb = client.batches.create(
        input_file_id=emb_file,
        endpoint="/v1/embeddings",
        completion_window="24h",
        output_expires_after={"anchor": "created_at", "seconds": 7200},
    )
    resp = client.batches.create(
        input_file_id=resp_file, endpoint="/v1/responses", completion_window="24h"
    )
    service.run_until_done(client, [emb.id, resp.id])

    emb = client.batches.retrieve(emb.id)
    assert emb.status == "completed", emb.errors
    lines = output_lines(client, emb.output_file_id)
    bodies = [CreateEmbeddingResponse.model_validate(ln["response"]["body"]) for ln in lines]
    assert [len(b.data) for b in bodies] == [1, 2] and bodies[0].model == "tiny-embed"
    assert emb.model == "tiny-embed"
    assert emb.usage is not None
    assert (emb.usage.input_tokens, emb.usage.output_tokens) == (usage_sum(lines)[0], 0)
    out = client.files.retrieve(emb.output_file_id)
    assert out.expires_at == out.created_at + 7200

    resp = client.batches.retrieve(resp.id)
    assert resp.status == "completed", resp.errors
    lines = output_lines(client, resp.output_file_id)
    for ln in lines:
        r = Response.model_validate(ln["response"]["body"])
        assert r.object == "response" and r.output[0].content[0].type == "output_text"
        assert r.status in ("completed", "incomplete")
    assert resp.usage is not None
    assert (resp.usage.input_tokens, resp.usage.output_tokens) == usage_sum(lines)

    # Retention: past the output's expiry the sweep deletes it, and the API says it expired;
    # the input of a finished batch goes too, per-shard files are gone already. The sweep runs
    # after the output expired AND after both batches ended plus the shard files' grace: the
    # batches end at the simulated tick that finalised them (run_until_done steps the clock to
    # the planned slots), which can be later than the output file's stamp.
    ended = max(b.completed_at or 0 for b in (emb, resp))
    sweep_at = max(out.created_at + 7201, ended + FINALISED_GRACE_S + 1)
    report = sweep_retention(service.sessions, service.settings, now_s=sweep_at)
    assert emb.output_file_id in report.files_expired and emb_file in report.files_expired
    with pytest.raises(openai.NotFoundError, match="expired"):
        client.files.content(emb.output_file_id)
    assert not list((service.settings.data_dir / "shards").glob("*.jsonl"))


def test_litellm_sdk_runs_an_embeddings_batch_against_gridshift(service: Service) -> None:
    # LiteLLM's own Files and Batches SDK, pointed at gridshift as an OpenAI provider
    import litellm  # in the dev extra

    where = {
        "custom_llm_provider": "openai",
        "api_base": f"{service.base_url}/v1",
        "api_key": service.key,
    }
    path = service.tmp / "litellm.jsonl"
    lines = [embedding(f"l{i}", "text-embedding-3-small", f"text {i}") for i in range(2)]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    with path.open("rb") as f:
        uploaded = litellm.create_file(file=f, purpose="batch", **where)
    batch = litellm.create_batch(
        completion_window="24h", endpoint="/v1/embeddings", input_file_id=uploaded.id, **where
    )
    service.run_until_done(service.client(), [batch.id])
    done = litellm.retrieve_batch(batch_id=batch.id, **where)
    assert done.status == "completed" and done.output_file_id
    content = litellm.file_content(file_id=done.output_file_id, **where)
    bodies = [json.loads(x)["response"]["body"] for x in content.text.splitlines() if x.strip()]
    assert [b["object"] for b in bodies] == ["list", "list"]
    assert all(b["data"][0]["object"] == "embedding" for b in bodies)
