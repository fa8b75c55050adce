"""The openai engine against a real ``transformers serve`` process and a real flaky HTTP server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from scheduler.errors import EngineError, TransientEngineError
from tests.conftest import unavailable
from workers.engines import EngineConfig, EngineRequest, build_engine
from workers.engines.openai_http import OpenAIHTTPEngine

pytestmark = pytest.mark.integration

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served_model(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of ``transformers serve`` running the tiny model (stopped by pid after)."""
    cli = Path(sys.executable).with_name("transformers")
    if not cli.exists():
        unavailable("the transformers CLI (pip install 'transformers[serving]')")
    port = free_port()
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [str(cli), "serve", str(tiny_model_dir), "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--device", "cpu"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            if proc.poll() is not None:
                unavailable(
                    f"transformers serve (exited {proc.returncode}: {log_path.read_text()[-800:]})"
                )
            try:
                if requests.get(f"{base_url}/health", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                unavailable(f"transformers serve (not healthy after 120 s; log {log_path})")
            time.sleep(0.5)
        yield base_url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def served_engine(served_model: str, tiny_model_dir: Path) -> Iterator[OpenAIHTTPEngine]:
    engine = build_engine(
        EngineConfig(
            kind="openai", options={"base_url": served_model + "/v1", "max_concurrency": 3}
        )
    )
    assert isinstance(engine, OpenAIHTTPEngine)
    engine.load("tiny", str(tiny_model_dir))
    yield engine
    engine.close()


@pytest.mark.slow
def test_real_server_answers_chat_and_completions_with_usage(
    served_engine: OpenAIHTTPEngine,
) -> None:
    # Given chat and completion requests, more than the concurrency limit
    requests_ = [
        EngineRequest(
            f"chat-{i}",
            CHAT,
            {"messages": [{"role": "user", "content": f"question {i}"}], "max_tokens": 4},
        )
        for i in range(4)
    ] + [EngineRequest("cmpl", COMPLETIONS, {"prompt": "The grid is", "max_tokens": 3})]
    # When they run
    results = served_engine.run(requests_)
    # Then all succeed, in order, with the server's bodies and its token counts
    assert [r.custom_id for r in results] == [r.custom_id for r in requests_]
    assert all(r.status_code == 200 for r in results), [r.error for r in results]
    for r in results:
        assert r.body is not None
        assert r.input_tokens == r.body["usage"]["prompt_tokens"] > 0
        assert r.output_tokens == r.body["usage"]["completion_tokens"]
        assert 0 < r.output_tokens <= 4
    assert results[0].body is not None and results[0].body["object"] == "chat.completion"
    assert results[-1].body is not None and results[-1].body["object"] == "text_completion"


@pytest.mark.slow
def test_real_server_client_error_fails_only_that_request(served_engine: OpenAIHTTPEngine) -> None:
    # Given one body the server rejects (an unexpected field) between two good ones
    good = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 2}
    requests_ = [
        EngineRequest("a", CHAT, good),
        EngineRequest("bad", CHAT, {**good, "no_such_field": 1}),
        EngineRequest("b", CHAT, good),
    ]
    # When they run
    results = served_engine.run(requests_)
    # Then the bad one carries the server's 4xx and message, and the others succeed
    assert [r.status_code for r in results][::2] == [200, 200]
    bad = results[1]
    assert 400 <= bad.status_code < 500
    assert bad.error is not None and "no_such_field" in bad.error["message"]


# --------------------------------------------------------------------------- flaky server


class Script:
    """What the flaky server answers, one status per hit (the last one repeats)."""

    def __init__(self, statuses: list[int], *, headers: dict[str, str] | None = None) -> None:
        self.statuses = statuses
        self.headers = headers or {}
        self.hits = 0
        self.bodies: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.delay_first_s = 0.0


@pytest.fixture
def flaky() -> Iterator[tuple[str, Script]]:
    script = Script([200])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            with script.lock:
                hit = script.hits
                script.hits += 1
                script.bodies.append(body)
            if hit == 0 and script.delay_first_s:
                time.sleep(script.delay_first_s)
            status = script.statuses[min(hit, len(script.statuses) - 1)]
            if status == 200:
                payload: dict[str, Any] = {
                    "id": f"cmpl-{hit}",
                    "object": "text_completion",
                    "model": body.get("model"),
                    "choices": [{"index": 0, "text": "ok", "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
                }
            else:
                payload = {"error": {"message": f"status {status}", "code": f"e{status}"}}
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in script.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client timed out and left (the read-timeout test)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", script
    server.shutdown()
    server.server_close()
    thread.join()


def http_engine(base_url: str, sleeps: list[float], **options: Any) -> OpenAIHTTPEngine:
    engine = OpenAIHTTPEngine(base_url=base_url, backoff_s=0.5, sleep=sleeps.append, **options)
    engine.load("tiny", "served-name")
    return engine


ONE = [EngineRequest("r1", COMPLETIONS, {"prompt": "hi", "model": "ignored"})]


def test_503_twice_then_200_succeeds_after_exponential_backoff(flaky: tuple[str, Script]) -> None:
    # Given a server that fails twice with 503
    url, script = flaky
    script.statuses = [503, 503, 200]
    sleeps: list[float] = []
    # When one request runs
    [result] = http_engine(url, sleeps, max_retries=3).run(ONE)
    # Then it succeeded on the third try, after backoffs of 0.5 s and 1 s
    assert result.status_code == 200 and result.output_tokens == 3 and result.input_tokens == 11
    assert script.hits == 3
    assert sleeps == [0.5, 1.0]
    # and the body carried the served model name, not the client's
    assert {b["model"] for b in script.bodies} == {"served-name"}


def test_persistent_5xx_raises_transient_error_after_the_last_try(
    flaky: tuple[str, Script],
) -> None:
    # Given a server that always answers 502
    url, script = flaky
    script.statuses = [502]
    # When / Then the run raises a transient error after 1 + max_retries tries
    with pytest.raises(TransientEngineError, match="HTTP 502"):
        http_engine(url, [], max_retries=2).run(ONE)
    assert script.hits == 3


def test_429_honours_retry_after(flaky: tuple[str, Script]) -> None:
    # Given a rate-limited server asking to wait 4 s
    url, script = flaky
    script.statuses = [429, 200]
    script.headers = {"Retry-After": "4"}
    sleeps: list[float] = []
    # When one request runs
    [result] = http_engine(url, sleeps).run(ONE)
    # Then the engine waited what the server asked (more than its own 0.5 s backoff)
    assert result.status_code == 200 and sleeps == [4.0]


def test_client_error_is_returned_verbatim_without_retry(flaky: tuple[str, Script]) -> None:
    # Given a server answering 400
    url, script = flaky
    script.statuses = [400]
    # When one request runs
    [result] = http_engine(url, []).run(ONE)
    # Then it is that request's result, with the server's error, tried once
    assert result.status_code == 400 and script.hits == 1
    assert result.body == {"error": {"message": "status 400", "code": "e400"}}
    assert result.error is not None and result.error["code"] == "e400"


def test_read_timeout_is_retried(flaky: tuple[str, Script]) -> None:
    # Given a server whose first answer is slower than the read timeout
    url, script = flaky
    script.delay_first_s = 1.0
    sleeps: list[float] = []
    # When one request runs with a 0.3 s timeout
    [result] = http_engine(url, sleeps, timeout_s=0.3).run(ONE)
    # Then the second try succeeded
    assert result.status_code == 200 and script.hits == 2 and len(sleeps) == 1


def test_refused_connection_raises_transient_error() -> None:
    # Given nothing listening on a port
    sleeps: list[float] = []
    engine = http_engine(f"http://127.0.0.1:{free_port()}", sleeps, max_retries=2)
    # When / Then the run raises a transient error naming the server, after two backoffs
    with pytest.raises(TransientEngineError, match="127.0.0.1"):
        engine.run(ONE)
    assert sleeps == [0.5, 1.0]


def test_concurrent_requests_keep_their_order(flaky: tuple[str, Script]) -> None:
    # Given twelve requests and four threads
    url, script = flaky
    many = [EngineRequest(f"r{i}", COMPLETIONS, {"prompt": str(i)}) for i in range(12)]
    # When they run
    results = http_engine(url, [], max_concurrency=4).run(many)
    # Then every request got its own result in input order
    assert [r.custom_id for r in results] == [r.custom_id for r in many]
    assert script.hits == 12 and sorted(b["prompt"] for b in script.bodies) == sorted(
        str(i) for i in range(12)
    )


def test_missing_base_url_is_a_configuration_error() -> None:
    # Given an openai engine without base_url / When built / Then the error says what to add
    with pytest.raises(EngineError, match="base_url"):
        build_engine(EngineConfig(kind="openai", options={}))
