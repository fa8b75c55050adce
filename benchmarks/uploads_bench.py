"""Uploads benchmark: a ~300 MB batch file through ``client.uploads.upload_file_chunked`` and
``batches.create``, against the plain ``POST /v1/files`` upload of the same file, same run.

The server is ``gridshift serve`` in its own process (SQLite store in a temporary data dir, the
benchmark's fleet); the official ``openai`` client talks to it over real HTTP. The server's
resident memory is read from ``/proc/PID/status`` (``VmHWM``, the peak, reset through
``/proc/PID/clear_refs`` before each phase), so what is measured is the server, not the client
(which holds one 64 MB part at a time). Usage::

    python benchmarks/uploads_bench.py [--mb 300] [--line-bytes 5000] [--part-mb 64]

Phases: ``uploads`` (create + parts + complete, then ``batches.create`` and its validation in
the background until the batch leaves ``validating``) and ``files`` (one multipart
``POST /v1/files``). Prints each phase's seconds, MB/s and peak RSS growth over the idle server,
and the uploads/files throughput ratio. Target: RSS growth of the uploads phase < 150 MB (exit 1
otherwise).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from openai import OpenAI

FLEET_YAML = """\
slot_minutes: 60
sites:
  - {name: site-a, pue: 1.2, wue_l_per_kwh: 0.5, ewif_l_per_kwh: 1.5,
     pools: [{name: cpu, gpu: CPU, count: 1}]}
models:
  - {name: tiny-chat, quality: 0.3, profiles: {CPU: {gpus: 1, prefill_tok_s: 500, decode_tok_s: 50, power_w: 30}}}
"""
WORDS = ["the", "grid", "is", "cleaner", "at", "night", "when", "wind", "blows", "hard"]
ADMIN_KEY = "gs-uploads-bench"
RSS_TARGET_MB = 150.0
MB = 1024 * 1024


def write_input(path: Path, total_mb: int, line_bytes: int) -> tuple[int, int]:
    """Write a chat batch file of about ``total_mb`` MiB; returns (bytes, lines)."""
    text = " ".join(WORDS[j % len(WORDS)] for j in range(line_bytes // 5))
    lines = 0
    size = 0
    with path.open("w", encoding="utf-8") as f:
        while size < total_mb * MB:
            body = {"model": "tiny-chat", "messages": [{"role": "user", "content": text}]}
            line = json.dumps(
                {
                    "custom_id": f"r{lines}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {**body, "max_tokens": 16},
                }
            )
            f.write(line + "\n")
            size += len(line) + 1
            lines += 1
    return path.stat().st_size, lines


def rss_mb(pid: int, field: str) -> float:
    """``VmRSS`` or ``VmHWM`` of ``pid`` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for process {pid}")


def reset_peak(pid: int) -> float:
    """Reset the peak RSS of ``pid`` (Linux ``clear_refs`` 5); return its RSS now."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return rss_mb(pid, "VmRSS")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(data_dir: Path, port: int, max_file_bytes: int) -> subprocess.Popen[bytes]:
    """``gridshift serve`` on ``port`` with a store in ``data_dir``; waits until it answers."""
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "fleet.yaml").write_text(FLEET_YAML, encoding="utf-8")
    env = {
        **os.environ,
        "GRIDSHIFT_DATA_DIR": str(data_dir),
        "GRIDSHIFT_FLEET": str(data_dir / "fleet.yaml"),
        "GRIDSHIFT_ADMIN_KEY": ADMIN_KEY,
        "GRIDSHIFT_MAX_FILE_BYTES": str(max_file_bytes),
        "GRIDSHIFT_MAX_REQUESTS_PER_BATCH": "1000000",
        "GRIDSHIFT_REQUEST_TIMEOUT_S": "3600",
    }
    cmd = [
        sys.executable,
        "-c",
        "from scheduler.cli import main; main()",
        "serve",
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code < 500:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
    proc.kill()
    raise RuntimeError("server did not answer within 60 s")


def uploads_phase(client: OpenAI, path: Path, part_mb: int) -> tuple[str, float]:
    """Upload in parts with md5, create a batch, wait until it leaves ``validating``."""
    md5 = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(MB):
            md5.update(chunk)
    started = time.perf_counter()
    upload = client.uploads.upload_file_chunked(
        file=path,
        mime_type="application/jsonl",
        purpose="batch",
        part_size=part_mb * MB,
        md5=md5.hexdigest(),
    )
    uploaded = time.perf_counter() - started
    assert upload.status == "completed" and upload.file is not None, upload
    batch = client.batches.create(
        input_file_id=upload.file.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    while batch.status == "validating":
        time.sleep(0.5)
        batch = client.batches.retrieve(batch.id)
    counts = batch.request_counts.total if batch.request_counts else 0
    return f"batch {batch.status}, {counts} requests", uploaded


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=300, help="File size in MiB.")
    parser.add_argument("--line-bytes", type=int, default=5000, help="Bytes of prompt per line.")
    parser.add_argument("--part-mb", type=int, default=64, help="Part size in MiB.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="uploads-bench-") as tmp:
        root = Path(tmp)
        path = root / "requests.jsonl"
        size, lines = write_input(path, args.mb, args.line_bytes)
        print(f"input: {size / MB:.1f} MiB, {lines} lines")
        port = free_port()
        server = start_server(root / "data", port, max_file_bytes=size + MB)
        try:
            client = OpenAI(
                base_url=f"http://127.0.0.1:{port}/v1",
                api_key=ADMIN_KEY,
                timeout=3600,
                max_retries=0,
            )
            client.files.list()  # warm: authentication, sessions, routes
            idle = reset_peak(server.pid)
            outcome, up_s = uploads_phase(client, path, args.part_mb)
            up_growth = rss_mb(server.pid, "VmHWM") - idle
            idle = reset_peak(server.pid)
            started = time.perf_counter()
            with path.open("rb") as f:
                client.files.create(file=f, purpose="batch")
            files_s = time.perf_counter() - started
            files_growth = rss_mb(server.pid, "VmHWM") - idle
        finally:
            server.terminate()
            server.wait(timeout=30)
    mb = size / MB
    print(
        f"uploads (parts of {args.part_mb} MiB + complete): {up_s:.1f} s, {mb / up_s:.0f} MiB/s,"
        f" peak RSS growth {up_growth:.0f} MiB (incl. batches.create: {outcome})"
    )
    print(
        f"files (one POST /v1/files):              {files_s:.1f} s, {mb / files_s:.0f} MiB/s,"
        f" peak RSS growth {files_growth:.0f} MiB"
    )
    print(f"throughput ratio uploads/files: {files_s / up_s:.2f}x")
    ok = up_growth < RSS_TARGET_MB
    print(f"target: uploads RSS growth < {RSS_TARGET_MB:.0f} MiB: {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
