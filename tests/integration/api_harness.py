"""Helpers for API tests: a small fleet file, request lines, and the real app on a real port."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import uvicorn

from scheduler.api.app import create_app
from scheduler.config import Settings

FLEET_YAML = """\
slot_minutes: 60
sites:
  - name: site-a
    pue: 1.2
    wue_l_per_kwh: 0.5
    ewif_l_per_kwh: 1.5
    pools: [{name: cpu, gpu: CPU, count: 1}]
  - name: site-b
    pue: 1.1
    wue_l_per_kwh: 0.2
    ewif_l_per_kwh: 1.0
    pools: [{name: cpu, gpu: CPU, count: 2}]
models:
  - name: tiny-chat
    quality: 0.3
    expected_output_fraction: 0.5
    profiles: {CPU: {gpus: 1, prefill_tok_s: 500, decode_tok_s: 50, power_w: 30}}
  - name: llama-3.1-8b-instruct
    quality: 0.69
    expected_output_fraction: 0.6
    profiles: {CPU: {gpus: 1, prefill_tok_s: 100, decode_tok_s: 10, power_w: 60}}
"""
CHAT: Final = "/v1/chat/completions"


def write_fleet(directory: Path) -> Path:
    """Write the two-site, two-model test fleet; return its path."""
    path = directory / "fleet.yaml"
    path.write_text(FLEET_YAML, encoding="utf-8")
    return path


def chat_line(cid: str, model: str = "tiny-chat", text: str = "Say hi.", **body: Any) -> str:
    """One JSONL line of a chat-completions batch."""
    b = {"model": model, "messages": [{"role": "user", "content": text}], **body}
    return json.dumps({"custom_id": cid, "method": "POST", "url": CHAT, "body": b})


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_server(settings: Settings) -> Iterator[str]:
    """Serve ``create_app(settings)`` with uvicorn on a free 127.0.0.1 port; yield its base URL."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on port {port}")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
