"""Create latency: ``POST /v1/batches`` of a large file, validated in the request vs ``validating``.

Serves the real app (uvicorn on 127.0.0.1, SQLite in a temporary directory, the sample fleet),
uploads one chat file of N requests, then creates a batch from it twice: once with the file
under the synchronous threshold (the peer: validation inside the request, the old behaviour)
and once above it (the answer is ``validating``; validation runs after the answer). Prints the
time to the answer and the time until the batch is ``in_progress``, and their ratio. Usage::

    python benchmarks/validating_bench.py [--requests 20000]
"""

from __future__ import annotations

import argparse
import json
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn

from scheduler.api.app import create_app
from scheduler.config import Settings
from scheduler.store.db import make_engine, session_factory
from scheduler.store.migrate import upgrade
from scheduler.store.tenants import create_api_key


@contextmanager
def running_server(settings: Settings) -> Iterator[str]:
    """The real app under uvicorn on a free 127.0.0.1 port, stopped on exit."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def write_file(path: Path, n: int) -> int:
    """A chat file of ``n`` requests naming a hosted alias; returns its size in bytes."""
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            body = {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": f"Summarise ticket {i}: " + "x" * 1500}],
                "max_tokens": 64,
            }
            line = {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions"}
            f.write(json.dumps({**line, "body": body}) + "\n")
    return path.stat().st_size


def create_and_wait(client: httpx.Client, file_id: str) -> tuple[float, float, str]:
    """Seconds to the create answer, seconds until a final validation status, first status."""
    t0 = time.perf_counter()
    answer = client.post(
        "/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"}
    )
    answered = time.perf_counter() - t0
    answer.raise_for_status()
    batch = answer.json()
    while batch["status"] == "validating":
        time.sleep(0.05)
        batch = client.get(f"/v1/batches/{batch['id']}").json()
    assert batch["status"] == "in_progress", batch
    return answered, time.perf_counter() - t0, answer.json()["status"]


def main() -> None:
    """Run both modes and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        path = root / "big.jsonl"
        size = write_file(path, args.requests)
        url = f"sqlite:///{root / 'bench.db'}"
        engine = make_engine(url)
        upgrade(engine)
        with session_factory(engine)() as s:
            key = create_api_key(s, "bench")
            s.commit()
        engine.dispose()
        rows = []
        for label, threshold in (("in the request (peer)", size + 1), ("validating", 0)):
            settings = Settings(
                data_dir=root / "data",
                database_url=url,
                validate_sync_max_bytes=threshold,
            )
            with (
                running_server(settings) as base,
                httpx.Client(
                    base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=300
                ) as client,
            ):
                with path.open("rb") as f:
                    up = client.post("/v1/files", files={"file": f}, data={"purpose": "batch"})
                up.raise_for_status()
                answered, ready, status = create_and_wait(client, up.json()["id"])
            rows.append((label, status, answered, ready))
        print(f"file: {args.requests} chat requests, {size / 1e6:.1f} MB, SQLite")
        print(f"{'validation':<24} {'first status':<13} {'answer s':>9} {'in_progress s':>14}")
        for label, status, answered, ready in rows:
            print(f"{label:<24} {status:<13} {answered:>9.3f} {ready:>14.3f}")
        peer, ours = rows[0][2], rows[1][2]
        print(
            f"answer time, validating / in the request: {ours / peer:.3f} x ({peer / ours:.0f} x faster)"
        )


if __name__ == "__main__":
    main()
