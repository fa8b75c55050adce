"""Embeddings on the real ``transformers`` engine and responses on the chat path (tiny model)."""

from __future__ import annotations

import base64
import math
import struct
from pathlib import Path

import pytest
from openai.types import CreateEmbeddingResponse
from openai.types.responses import Response

from workers.engines import EngineConfig, EngineRequest, build_engine
from workers.engines.responses import ResponsesAdapter
from workers.engines.transformers_embed import TransformersEmbedEngine

EMB = "/v1/embeddings"
RESP = "/v1/responses"


@pytest.fixture(scope="module")
def embedder(tiny_model_dir: Path) -> TransformersEmbedEngine:
    engine = build_engine(
        EngineConfig(kind="transformers", options={"device": "cpu"}, task="embed")
    )
    assert isinstance(engine, TransformersEmbedEngine)
    engine.load("tiny-embed", str(tiny_model_dir))
    return engine


@pytest.fixture(scope="module")
def responder(tiny_model_dir: Path) -> ResponsesAdapter:
    engine = ResponsesAdapter(
        build_engine(EngineConfig(kind="transformers", options={"device": "cpu"}))
    )
    engine.load("tiny-chat", str(tiny_model_dir))
    return engine


def embed(engine: TransformersEmbedEngine, cid: str = "e", **body: object):
    return engine.run([EngineRequest(cid, EMB, {"model": "text-embedding-3-small", **body})])[0]


def test_embeddings_body_is_openais_with_normalised_vectors_and_real_token_counts(
    embedder: TransformersEmbedEngine,
) -> None:
    texts = ["the grid is clean at night", "solar noon in Madrid"]
    result = embed(embedder, input=texts)
    assert result.status_code == 200, result.error
    parsed = CreateEmbeddingResponse.model_validate(result.body)
    assert parsed.object == "list" and parsed.model == "tiny-embed"
    assert [d.index for d in parsed.data] == [0, 1]
    assert all(d.object == "embedding" for d in parsed.data)
    for d in parsed.data:
        assert len(d.embedding) == 32  # the tiny model's hidden size
        assert math.isclose(math.fsum(v * v for v in d.embedding), 1.0, rel_tol=1e-5)
    tokens = sum(len(embedder._tokenizer(t)["input_ids"]) for t in texts)
    assert parsed.usage.prompt_tokens == parsed.usage.total_tokens == tokens
    assert (result.input_tokens, result.output_tokens) == (tokens, 0)
    assert parsed.data[0].embedding != parsed.data[1].embedding


def test_padding_does_not_change_a_vector(embedder: TransformersEmbedEngine) -> None:
    alone = embed(embedder, input="short").body["data"][0]["embedding"]
    batched = embed(embedder, input=["short", "a much longer text that forces padding"]).body
    assert batched["data"][0]["embedding"] == pytest.approx(alone, abs=1e-5)


def test_base64_is_little_endian_float32_of_the_same_vector(
    embedder: TransformersEmbedEngine,
) -> None:
    floats = embed(embedder, input="hello").body["data"][0]["embedding"]
    b64 = embed(embedder, input="hello", encoding_format="base64").body["data"][0]["embedding"]
    raw = base64.b64decode(b64)
    decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert decoded == pytest.approx(floats, abs=1e-6)


def test_token_id_inputs_and_per_request_errors(embedder: TransformersEmbedEngine) -> None:
    ids = embedder._tokenizer("hello")["input_ids"]
    by_ids = embed(embedder, input=ids).body["data"][0]["embedding"]
    by_text = embed(embedder, input="hello").body["data"][0]["embedding"]
    assert by_ids == pytest.approx(by_text, abs=1e-6)
    too_long = embed(embedder, input=[1] * 5000)
    assert too_long.status_code == 400 and "shorten it" in too_long.error["message"]
    too_wide = embed(embedder, input="x", dimensions=64)
    assert too_wide.status_code == 400 and "dimensions 64" in too_wide.error["message"]
    cut = embed(embedder, input="x", dimensions=8).body["data"][0]["embedding"]
    assert len(cut) == 8 and math.isclose(math.fsum(v * v for v in cut), 1.0, rel_tol=1e-5)


def test_a_responses_line_runs_on_the_chat_path_and_answers_a_response_object(
    responder: ResponsesAdapter,
) -> None:
    body = {
        "model": "gpt-4o-mini",
        "instructions": "Be brief.",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "Hello"}]}],
        "max_output_tokens": 5,
        "temperature": 0,
    }
    chat_twin = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello"},
        ],
        "max_tokens": 5,
        "temperature": 0,
    }
    got, twin = responder.run(
        [
            EngineRequest("r", RESP, body),
            EngineRequest("c", "/v1/chat/completions", chat_twin),
        ]
    )
    assert got.status_code == 200, got.error
    response = Response.model_validate(got.body)
    assert response.object == "response" and response.model == "tiny-chat"
    message = response.output[0]
    assert message.type == "message" and message.content[0].type == "output_text"
    # Same greedy generation as the equivalent chat request
    assert response.output_text == twin.body["choices"][0]["message"]["content"]
    usage = response.usage
    assert usage is not None
    assert usage.input_tokens == twin.body["usage"]["prompt_tokens"] == got.input_tokens
    assert usage.output_tokens == twin.body["usage"]["completion_tokens"] == got.output_tokens
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    finish = twin.body["choices"][0]["finish_reason"]
    assert response.status == ("incomplete" if finish == "length" else "completed")


def test_a_json_format_is_refused_per_line_by_an_engine_that_cannot_constrain_output(
    responder: ResponsesAdapter,
) -> None:
    fmt = {"type": "json_schema", "name": "a", "schema": {"type": "object"}}
    bad, good = responder.run(
        [
            EngineRequest("r1", RESP, {"model": "m", "input": "x", "text": {"format": fmt}}),
            EngineRequest("r2", RESP, {"model": "m", "input": "x", "max_output_tokens": 2}),
        ]
    )
    assert bad.status_code == 400 and "cannot constrain output to JSON" in bad.error["message"]
    assert good.status_code == 200 and good.body["object"] == "response"
