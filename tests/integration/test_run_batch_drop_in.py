"""``gridshift run-batch`` as a ``vllm run-batch`` drop-in: bad lines, URLs, flags, exit codes.

Real parts: the ``gridshift`` command in a subprocess, a real local HTTP server (GET input,
PUT output, a failing PUT), and the ``openai`` engine posting to a real local
OpenAI-compatible HTTP server. The vLLM engine's side is in ``test_vllm_real.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from scheduler.engine_options import OptionCheck
from scheduler.errors import InvalidInput
from scheduler.intake.catalog import ModelCatalog
from tests.integration.run_batch_servers import Store, free_port, serving
from tests.vllm_helpers import chat_request, read_jsonl, write_jsonl
from workers.run_batch_io import UploadFailed, fetch_input, metrics_server, upload_output
from workers.run_batch_lines import STREAM_ERROR, LineSorter, sort_lines

pytestmark = pytest.mark.integration

GRIDSHIFT = str(Path(sys.executable).parent / "gridshift")
MODEL = "tiny"
CHAT = "/v1/chat/completions"


def twenty_lines(model: str = MODEL) -> list[dict[str, Any]]:
    """20 chat lines, line 4 with ``stream: true`` and line 12 naming a model not served."""
    lines = [chat_request(f"r{i}", f"Summarise ticket {i}", model, max_tokens=8) for i in range(20)]
    lines[3]["body"]["stream"] = True
    lines[11]["body"]["model"] = "gpt-nope"
    return lines


def sorter(served: tuple[str, ...] = (MODEL,)) -> LineSorter:
    kinds = {MODEL: frozenset({"vllm"})}
    return LineSorter(served, ModelCatalog.coerce([MODEL]), OptionCheck(kinds))


def test_bad_lines_become_vllms_error_lines_at_their_positions(tmp_path: Path) -> None:
    # Given a file with a streaming line, an unknown model, an out-of-range option, a line
    # without a model, a repeated custom_id and a url this run does not serve
    lines = twenty_lines()
    lines[5]["body"]["temperature"] = 5
    del lines[7]["body"]["model"]
    lines[9]["custom_id"] = "r0"
    lines[15]["url"] = "/v1/audio/speech"
    source = write_jsonl(tmp_path / "in.jsonl", lines)
    # When the line pass sorts it
    plan = sort_lines(source, tmp_path / "run.jsonl", sorter())
    # Then every line keeps its position and custom_id; the bad ones carry vLLM's codes
    assert [cid for cid, _ in plan.order] == [x["custom_id"] for x in lines]
    errors = {i: e for i, (_, e) in enumerate(plan.order) if e is not None}
    assert sorted(errors) == [3, 5, 9, 11, 15]
    assert errors[3]["response"] == {
        "status_code": 400,
        "request_id": errors[3]["response"]["request_id"],
        "body": None,
    }
    assert errors[3]["error"] == STREAM_ERROR
    assert errors[11]["response"]["status_code"] == 404
    assert errors[11]["error"]["error"]["type"] == "NotFoundError"
    assert "`gpt-nope` does not exist" in errors[11]["error"]["error"]["message"]
    for i in (5, 9, 15):
        assert errors[i]["response"]["status_code"] == 400
        assert errors[i]["error"]["error"]["code"] == 400
    assert "temperature" in errors[5]["error"]["error"]["message"]
    assert "already used on line 1" in errors[9]["error"]["error"]["message"]
    assert "/v1/audio/speech was used" in errors[15]["error"]["error"]["message"]
    for e in errors.values():
        assert e["id"].startswith("vllm-") and e["response"]["request_id"].startswith("vllm-batch-")
    # and the 15 others are what runs, a line without a model running on the served name
    kept = read_jsonl(plan.kept)
    assert plan.runs == len(kept) == 15
    assert [x["custom_id"] for x in kept] == [
        x["custom_id"] for i, x in enumerate(lines) if i not in errors
    ]
    assert {x["body"]["model"] for x in kept} == {MODEL}


def test_a_line_that_is_not_a_request_refuses_the_file_naming_every_such_line(
    tmp_path: Path,
) -> None:
    source = tmp_path / "in.jsonl"
    good = json.dumps(chat_request("a", "hi", MODEL))
    source.write_text(f'{good}\n{{"custom_id": "b", "body": {{}}\n{good}\n["x"]\n')
    with pytest.raises(InvalidInput) as e:
        sort_lines(source, tmp_path / "run.jsonl", sorter())
    message = str(e.value)
    assert "2 line(s) that are not batch requests" in message
    assert (
        "line 2: not valid JSON" in message and "line 4: the line is not a JSON object" in message
    )


def test_http_input_and_put_output_and_a_failing_put(tmp_path: Path) -> None:
    store = Store(fail_status=503)
    store.files["/files/in.jsonl"] = b'{"a": 1}\n' * 1000
    with serving(store) as base:
        # GET: the file arrives byte for byte in the directory asked for
        got = fetch_input(f"{base}/files/in.jsonl", tmp_path)
        assert got.parent == tmp_path and got.read_bytes() == store.files["/files/in.jsonl"]
        with pytest.raises(InvalidInput, match="HTTP 404"):
            fetch_input(f"{base}/files/missing.jsonl", tmp_path)
        # PUT: the server holds the file
        out = tmp_path / "out.jsonl"
        out.write_bytes(b'{"custom_id": "a"}\n')
        upload_output(out, f"{base}/files/out.jsonl")
        assert store.files["/files/out.jsonl"] == out.read_bytes()
        # a PUT that keeps failing with 503 is retried, then reported with the kept copy
        sleeps: list[float] = []
        with pytest.raises(UploadFailed) as e:
            upload_output(out, f"{base}/fail/out.jsonl", sleep=sleeps.append)
        assert store.put_attempts["/fail/out.jsonl"] == 3 and sleeps == [1.0, 2.0]
        assert "HTTP 503" in str(e.value) and str(out) in str(e.value)
    # nothing listens any more: the GET fails with a clear message
    with pytest.raises(InvalidInput, match="cannot read the input file"):
        fetch_input(f"{base}/files/in.jsonl", tmp_path)


def test_metrics_are_served_during_the_run_only() -> None:
    port = free_port()
    with metrics_server(port, "127.0.0.1"):
        page = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert page.status_code == 200 and "python_info" in page.text
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)


def _cli(tmp_path: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GRIDSHIFT_DATABASE_URL": ""}
    return subprocess.run(
        [GRIDSHIFT, "run-batch", "--model", MODEL, "--data-dir", str(tmp_path / "gs"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_cli_runs_a_url_file_with_bad_lines_and_uploads_the_output(tmp_path: Path) -> None:
    # Given 20 lines (2 bad) served over http and a real OpenAI-compatible server
    store = Store()
    lines = twenty_lines()
    lines[0]["body"]["model"] = "alias-b"  # a second served name
    store.files["/files/in.jsonl"] = "".join(json.dumps(x) + "\n" for x in lines).encode()
    with serving(store) as base:
        # When gridshift run-batch reads -i with GET and writes -o with PUT
        done = _cli(
            tmp_path,
            "-i",
            f"{base}/files/in.jsonl",
            "-o",
            f"{base}/files/out.jsonl",
            "--engine",
            "openai",
            "--base-url",
            base,
            "--served-model-name",
            MODEL,
            "alias-b",
            "--output-tmp-dir",
            str(tmp_path),
        )
    # Then it exits 0 and the server holds 20 lines: 18 results and the 2 errors in place
    assert done.returncode == 0, done.stderr
    out = [json.loads(x) for x in store.files["/files/out.jsonl"].decode().splitlines()]
    assert [x["custom_id"] for x in out] == [x["custom_id"] for x in lines]
    codes = [x["response"]["status_code"] for x in out]
    assert codes[3] == 400 and codes[11] == 404 and codes.count(200) == 18
    assert "20/20 lines answered (18 ok, 2 errors, 2 of them refused before running)" in done.stdout
    # and only the 18 good lines reached the server
    assert len(store.bodies) == 18
    # and nothing is left in the temporary directory
    assert not list(tmp_path.glob("tmp_batch_output_*"))


def test_cli_exit_codes_for_a_failed_upload_and_a_refused_file(tmp_path: Path) -> None:
    store = Store(fail_status=403)
    source = write_jsonl(tmp_path / "in.jsonl", twenty_lines()[:3])
    with serving(store) as base:
        failed = _cli(
            tmp_path,
            "-i",
            str(source),
            "-o",
            f"{base}/fail/out.jsonl",
            "--engine",
            "openai",
            "--base-url",
            base,
            "--output-tmp-dir",
            str(tmp_path),
        )
        # a 403 is final: one try, exit 1, and the results are kept where the message says
        assert failed.returncode == 1
        assert "uploading the output to" in failed.stderr and "HTTP 403" in failed.stderr
        assert store.put_attempts["/fail/out.jsonl"] == 1
        kept = list(tmp_path.glob("tmp_batch_output_*"))
        assert len(kept) == 1 and str(kept[0]) in failed.stderr
        assert len(read_jsonl(kept[0])) == 3
        # a file with a line that is not a request: exit 2, nothing run, promptly
        bad = tmp_path / "bad.jsonl"
        bad.write_text(source.read_text() + "{not json\n")
        t0 = time.monotonic()
        refused = _cli(
            tmp_path,
            "-i",
            str(bad),
            "-o",
            str(tmp_path / "o.jsonl"),
            "--engine",
            "openai",
            "--base-url",
            base,
        )
    assert refused.returncode == 2 and "line 4: not valid JSON" in refused.stderr
    assert time.monotonic() - t0 < 60
    assert len(store.bodies) == 3 and not (tmp_path / "o.jsonl").exists()


def test_the_openai_engine_forwards_tools_and_tool_histories_unchanged() -> None:
    from workers.engines.base import EngineRequest
    from workers.engines.openai_http import OpenAIHTTPEngine

    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    history = [
        {"role": "user", "content": "carbon now?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "212 g/kWh"},
    ]
    call = {"model": "m", "messages": history[:1], "tools": tools, "tool_choice": "required"}
    reply = {"model": "m", "messages": history, "tools": tools, "tool_choice": "none"}
    store = Store()
    with serving(store) as base:
        engine = OpenAIHTTPEngine(base_url=base, max_concurrency=1)
        engine.load("m", None)
        first, second = engine.run(
            [EngineRequest("a", "/v1/chat/completions", call), EngineRequest("b", CHAT, reply)]
        )
        engine.close()
    # the server got the tools, the choice and the history as they were written
    assert [b["tools"] for b in store.bodies] == [tools, tools]
    assert [b["tool_choice"] for b in store.bodies] == ["required", "none"]
    assert store.bodies[1]["messages"] == history
    # and its tool call comes back in the result, with its finish reason
    assert first.status_code == 200 and first.body is not None
    choice = first.body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"][0]["function"]["name"] == "lookup"
    assert second.body is not None and second.body["choices"][0]["message"]["content"] == "ok"


def test_vllm_flags_reach_the_engine_and_every_served_name_is_an_alias(tmp_path: Path) -> None:
    from workers.engines.vllm import VLLMEngine
    from workers.run_batch import RunBatchArgs, engine_spec, run_fleet

    flags = {"chat_template": "{{ messages }}", "tokenizer": "tok", "revision": "v2"}
    tools = {"tool_call_parser": "hermes", "enable_auto_tool_choice": True}
    args = RunBatchArgs(
        input_file=tmp_path / "in.jsonl",
        output_file=tmp_path / "out.jsonl",
        model="/models/m",
        engine_options={**flags, **tools, "dtype": None},
        served_model_names=("m", "m-alias"),
        metrics_port=9400,
    )
    spec = engine_spec(args)
    # the vLLM flags go to vllm.LLM (stat loggers on for --enable-metrics), unset ones do not
    assert spec == {"kind": "vllm", **flags, "disable_log_stats": False}
    kind = spec.pop("kind")
    assert kind == "vllm"
    assert VLLMEngine(**spec).llm_kwargs("/models/m") == {"model": "/models/m", **spec}
    # the tool flags are the model's (per model in a fleet), the other names its aliases
    fleet = run_fleet(args, args.served[0])
    assert fleet.models[0].name == "m" and fleet.models[0].weights == "/models/m"
    assert {k: fleet.models[0].extra[k] for k in tools} == tools
    assert {a.name: a.model for a in fleet.model_aliases.values()} == {"m-alias": "m"}
    # the openai engine keeps only what its client needs
    openai = RunBatchArgs(**{**args.__dict__, "engine": "openai"})
    assert engine_spec(openai) == {"kind": "openai"}


def test_cli_auto_tool_choice_without_a_parser_is_a_usage_error(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", twenty_lines()[:1])
    done = _cli(
        tmp_path,
        "-i",
        str(source),
        "-o",
        str(tmp_path / "out.jsonl"),
        "--engine",
        "openai",
        "--base-url",
        "http://127.0.0.1:9",
        "--enable-auto-tool-choice",
    )
    assert done.returncode == 2 and "needs a tool_call_parser" in done.stderr
    assert not (tmp_path / "out.jsonl").exists()
