"""Intake benchmark: validating a 50,000-request (~100 MB) batch file vs a bare json.loads loop.

Each measurement runs in its own subprocess, which reports wall seconds and peak RSS
(``resource.getrusage(...).ru_maxrss``). Usage::

    python benchmarks/intake_bench.py [--requests 50000] [--line-bytes 2000] [--rounds 3]
                                      [--database-url URL]

Modes measured: ``bare`` (read lines + ``json.loads``), ``scan`` (``scan_file``: full validation),
``create`` (``create_batch`` on a fresh SQLite store, or on ``--database-url`` (an EMPTY database,
e.g. PostgreSQL): validation + bulk insert of requests and parts in one transaction).
Targets: scan >= 0.5 x bare throughput, peak RSS < 300 MB.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

FLEET_YAML = """\
slot_minutes: 60
sites:
  - {name: site-a, pue: 1.2, wue_l_per_kwh: 0.5, ewif_l_per_kwh: 1.5,
     pools: [{name: cpu, gpu: CPU, count: 1}]}
models:
  - {name: tiny-chat, quality: 0.3, profiles: {CPU: {gpus: 1, prefill_tok_s: 500, decode_tok_s: 50, power_w: 30}}}
  - {name: llama-3.1-8b-instruct, quality: 0.69, profiles: {CPU: {gpus: 1, prefill_tok_s: 100, decode_tok_s: 10, power_w: 60}}}
"""
WORDS = [
    "the",
    "grid",
    "is",
    "cleaner",
    "at",
    "night",
    "when",
    "the",
    "wind",
    "blows",
    "over",
    "the",
    "north",
    "sea",
]


def write_input(path: Path, requests: int, line_bytes: int) -> int:
    """Write a chat-completions batch file; returns its size in bytes."""
    with path.open("w", encoding="utf-8") as f:
        for i in range(requests):
            text = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(line_bytes // 5))
            body = {
                "model": "tiny-chat" if i % 3 else "llama-3.1-8b-instruct",
                "messages": [
                    {"role": "system", "content": "Summarise the text in one sentence."},
                    {"role": "user", "content": text[: line_bytes - 250]},
                ],
                "max_tokens": 64 + i % 200,
                "temperature": 0.2,
            }
            line = {"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions"}
            f.write(json.dumps({**line, "body": body}) + "\n")
    return path.stat().st_size


def _child(mode: str, path: Path, workdir: Path, database_url: str) -> dict[str, Any]:
    start = time.perf_counter()
    cpu_start = time.process_time()
    if mode == "bare":
        with path.open("rb", buffering=1 << 20) as f:
            n = sum(1 for line in f if json.loads(line) is not None)
    elif mode == "scan":
        from scheduler.intake.validate import scan_file

        res = scan_file(
            path,
            endpoint="/v1/chat/completions",
            models=frozenset({"tiny-chat", "llama-3.1-8b-instruct"}),
            min_quality=None,
            max_requests=1_000_000,
        )
        assert res.ok, res.errors[:3]
        n = res.requests
    else:
        from scheduler.config import Settings
        from scheduler.fleet import load_fleet
        from scheduler.intake.submit import BatchOptions, create_batch
        from scheduler.store.db import make_engine, session_factory
        from scheduler.store.files import save_file
        from scheduler.store.migrate import upgrade
        from scheduler.store.tenants import create_tenant

        settings = Settings(data_dir=workdir / "data", database_url=database_url)
        engine = make_engine(settings.resolved_database_url)
        upgrade(engine)
        (workdir / "fleet.yaml").write_text(FLEET_YAML)
        fleet = load_fleet(workdir / "fleet.yaml")
        with session_factory(engine)() as session:
            tenant = create_tenant(session, "bench")
            session.commit()
            file = save_file(
                session,
                settings.files_dir,
                path,
                tenant_id=tenant.id,
                filename="in.jsonl",
                purpose="batch",
            )
            start = time.perf_counter()
            cpu_start = time.process_time()
            batch = create_batch(
                session,
                fleet,
                tenant.id,
                BatchOptions(input_file_id=file.id, endpoint="/v1/chat/completions"),
                max_requests=1_000_000,
            )
            session.commit()
            assert batch.status == "in_progress", batch.errors
            n = batch.request_total
    seconds = time.perf_counter() - start
    cpu_s = time.process_time() - cpu_start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"mode": mode, "requests": n, "seconds": seconds, "cpu_s": cpu_s, "peak_rss_mb": peak_mb}


def _run(mode: str, path: Path, workdir: Path, database_url: str) -> dict[str, Any]:
    workdir.mkdir()
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--database-url",
            database_url,
            "--child",
            mode,
            str(path),
            str(workdir),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    """Generate the input, run each mode in a subprocess, print a table."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=50_000)
    ap.add_argument("--line-bytes", type=int, default=2_000)
    ap.add_argument("--rounds", type=int, default=3, help="bare/scan rounds; the best counts")
    ap.add_argument(
        "--database-url", default="", help="empty database for `create` (default SQLite)"
    )
    ap.add_argument("--child", nargs=3, metavar=("MODE", "PATH", "WORKDIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child = _child(args.child[0], Path(args.child[1]), Path(args.child[2]), args.database_url)
        print(json.dumps(child))
        return
    with tempfile.TemporaryDirectory(prefix="gs-intake-bench-") as tmp:
        path = Path(tmp) / "input.jsonl"
        size = write_input(path, args.requests, args.line_bytes)
        print(f"input: {args.requests} requests, {size / 1e6:.1f} MB")
        # bare and scan alternate, each round in fresh processes; the best round counts, so a
        # busy shared machine disturbs the comparison less. CPU seconds are shown beside wall.
        best: dict[str, dict[str, Any]] = {}
        for i in range(args.rounds):
            for mode in ("bare", "scan"):
                r = _run(mode, path, Path(tmp) / f"{mode}{i}", args.database_url)
                if mode not in best or r["seconds"] < best[mode]["seconds"]:
                    best[mode] = r
        best["create"] = _run("create", path, Path(tmp) / "create", args.database_url)
        for mode, r in best.items():
            print(
                f"{mode:7s} {r['seconds']:7.2f} s wall {r['cpu_s']:7.2f} s CPU  "
                f"{size / 1e6 / r['seconds']:7.1f} MB/s  peak RSS {r['peak_rss_mb']:6.0f} MB"
            )
        ratio = best["bare"]["seconds"] / best["scan"]["seconds"]
        cpu_ratio = best["bare"]["cpu_s"] / best["scan"]["cpu_s"]
        print(
            f"validation throughput = {ratio:.2f} x bare json.loads by wall time, "
            f"{cpu_ratio:.2f} x by CPU time (target >= 0.5)"
        )


if __name__ == "__main__":
    main()
