"""Real local HTTP servers for ``gridshift run-batch`` tests (stdlib ``http.server`` in a thread).

``FileServer`` answers GET and PUT under ``/files/`` (what ``-i``/``-o`` URLs point at) and
fails PUTs under ``/fail/`` with a status; ``ChatServer`` is an OpenAI-compatible
``/v1/chat/completions`` that records every body it receives and answers a well-formed
``chat.completion`` (with ``tool_calls`` when the request offers tools and asks for one).
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Store:
    """What the servers hold and saw: files by path, PUT attempts, chat bodies received."""

    def __init__(self, fail_status: int = 500) -> None:
        self.files: dict[str, bytes] = {}
        self.put_attempts: dict[str, int] = {}
        self.bodies: list[dict[str, Any]] = []
        self.fail_status = fail_status
        self.lock = threading.Lock()


def _handler(store: Store) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, status: int, payload: bytes, kind: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def do_GET(self) -> None:
            data = store.files.get(self.path)
            if data is None:
                self._send(404, b'{"error": "no such file"}')
            else:
                self._send(200, data, "application/jsonl")

        def do_PUT(self) -> None:
            data = self._body()
            with store.lock:
                store.put_attempts[self.path] = store.put_attempts.get(self.path, 0) + 1
            if self.path.startswith("/fail/"):
                self._send(store.fail_status, b"the bucket refuses this upload")
                return
            store.files[self.path] = data
            self._send(201, b"")

        def do_POST(self) -> None:
            body = json.loads(self._body())
            with store.lock:
                store.bodies.append(body)
            self._send(200, json.dumps(chat_answer(body)).encode())

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


def chat_answer(body: dict[str, Any]) -> dict[str, Any]:
    """A well-formed chat.completion for ``body``; a tool call when tools are offered and
    ``tool_choice`` is not ``none``."""
    tools = body.get("tools") or []
    message: dict[str, Any] = {"role": "assistant", "content": "ok"}
    finish = "stop"
    if tools and body.get("tool_choice", "auto") != "none":
        name = tools[0]["function"]["name"]
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": name, "arguments": '{"q": "grid"}'},
                }
            ],
        }
        finish = "tool_calls"
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": body.get("model"),
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }


@contextmanager
def serving(store: Store) -> Iterator[str]:
    """Serve ``store`` on a free port of 127.0.0.1; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _handler(store))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
