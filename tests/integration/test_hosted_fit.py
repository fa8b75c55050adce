"""A hosted request file on the sample fleet, through the official client and a real server:
lines that fit are accepted at once, lines no model's context can hold are refused line by line
at create, within seconds, never after the batch waited for its slot."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai import OpenAI

from scheduler.config import Settings
from scheduler.store.db import make_engine, session_factory
from scheduler.store.migrate import upgrade
from scheduler.store.tenants import create_api_key
from tests.integration.api_harness import running_server

pytestmark = pytest.mark.integration


def hosted_file(path: Path, max_tokens: int, lines: int = 15) -> Path:
    """The README's hosted file: chat lines naming ``gpt-4o-mini`` with ``max_tokens``."""
    rows = [
        {
            "custom_id": f"ticket-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "gpt-4o-mini",
                "messages": [
                    {"role": "system", "content": "You summarise support tickets."},
                    {"role": "user", "content": f"Ticket {i}: the export job fails at night."},
                ],
                "max_tokens": max_tokens,
                "safety_identifier": "user-42",
                "prompt_cache_key": "tickets",
                "service_tier": "auto",
            },
        }
        for i in range(lines)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def client(tmp_path: Path) -> Iterator[OpenAI]:
    """The official client on a real server with the bundled sample fleet (no fleet setting)."""
    url = f"sqlite:///{tmp_path / 'api.db'}"
    settings = Settings(data_dir=tmp_path / "data", database_url=url, fleet=None)
    engine = make_engine(url)
    upgrade(engine)
    with session_factory(engine)() as s:
        key = create_api_key(s, "acme")
        s.commit()
    engine.dispose()
    with running_server(settings) as base:
        yield OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=30)


def test_a_hosted_file_with_max_tokens_1000_fits_the_sample_fleet(
    client: OpenAI, tmp_path: Path
) -> None:
    f = client.files.create(
        file=hosted_file(tmp_path / "in.jsonl", 1000).open("rb"), purpose="batch"
    )
    batch = client.batches.create(
        input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert batch.status == "in_progress", batch.errors
    assert batch.request_counts is not None and batch.request_counts.total == 15
    parts = (batch.model_extra or {})["gridshift"]["parts"]
    assert [(p["model"], p["min_quality"], p["requests"]) for p in parts] == [(None, 0.4, 15)]


def test_a_line_no_model_can_hold_is_refused_at_create_within_seconds(
    client: OpenAI, tmp_path: Path
) -> None:
    f = client.files.create(
        file=hosted_file(tmp_path / "in.jsonl", 5000).open("rb"), purpose="batch"
    )
    started = time.monotonic()
    batch = client.batches.create(
        input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    took = time.monotonic() - started
    assert batch.status == "failed" and took < 10
    assert batch.errors is not None and batch.errors.data is not None
    errors = batch.errors.data
    assert [e.line for e in errors] == list(range(1, 16))
    assert {(e.code, e.param) for e in errors} == {("context_length_exceeded", "body.max_tokens")}
    assert "4096 tokens" in (errors[0].message or "")
