"""Fault check: a live service whose data dir is full for minutes loses no request (issue 22).

Starts the service as the README runs it (``serve``, ``dispatch``, one ``worker`` per sample
pool) on PostgreSQL (a fresh database; the embedded broker on it) with the data dir on a small
tmpfs (needs root: ``mount -t tmpfs``), lease 10 s. It uploads a 20-request file, fills the
tmpfs to its last byte, creates the batch (shards of 4), keeps the disk full for
``--full-s`` (180 s), frees it, and waits for the batch. It prints, as JSON, the batch's
request counts, the output file's lines (each custom_id once), the shards that failed or were
split, the storage-fault attempts and the workers' presence states seen while full.

    python benchmarks/fault_full_disk.py [--full-s 180] [--pg postgresql://postgres@127.0.0.1/postgres]

Exit status 0 when every request completed exactly once and no shard failed. Every process is
started here and stopped by its pid; the tmpfs is unmounted and the database dropped at the end.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path

from benchmarks.service_path import GRIDSHIFT, POOLS, _free_port, _gridshift, _wait_http

REQUESTS = 20


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as fh:
        for size in (1 << 20, 4096):
            try:
                while True:
                    fh.write(b"\0" * size)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
    return filler


def _query(url: str, sql: str) -> list[tuple[object, ...]]:
    import psycopg

    with psycopg.connect(url) as conn:
        return list(conn.execute(sql).fetchall())


def main() -> int:  # noqa: D103
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full-s", type=float, default=180.0)
    parser.add_argument("--timeout-s", type=float, default=240.0, help="after space returns")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    import psycopg
    from openai import OpenAI

    root = Path(tempfile.mkdtemp(prefix="gridshift-fulldisk-"))
    disk = root / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)], check=True)
    db = f"gridshift_fault_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.pg, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    url = args.pg.rsplit("/", 1)[0] + f"/{db}"
    env = {
        **os.environ,
        "GRIDSHIFT_DATA_DIR": str(disk / "data"),
        "GRIDSHIFT_DATABASE_URL": url,
        "GRIDSHIFT_TICK_S": "1",
        "GRIDSHIFT_LEASE_S": "10",
        "GRIDSHIFT_HEARTBEAT_S": "3",
        "GRIDSHIFT_MAX_SHARD_REQUESTS": "4",
        "GRIDSHIFT_MIN_FREE_DISK_MB": "2",
        "GRIDSHIFT_STORAGE_BACKOFF_MAX_S": "15",
    }
    for key in ("GRIDSHIFT_FLEET", "GRIDSHIFT_BROKER_URL"):
        env.pop(key, None)
    procs: list[subprocess.Popen[bytes]] = []
    logs = root / "logs"
    logs.mkdir()
    filler: Path | None = None
    try:
        _gridshift("db", "upgrade", env=env)
        key = _gridshift("keys", "create", "--tenant", "acme", env=env).split()[-1]
        port = _free_port()

        def start(name: str, *cmd: str) -> None:
            out = (logs / f"{name}.log").open("wb")
            procs.append(subprocess.Popen([GRIDSHIFT, *cmd], env=env, stdout=out, stderr=out))

        start("serve", "serve", "--port", str(port))
        start("dispatch", "dispatch")
        for site, pool in POOLS:
            start(f"worker-{site}", "worker", "--site", site, "--pool", pool)
        _wait_http(f"http://127.0.0.1:{port}/healthz", 60)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key)
        line = {"method": "POST", "url": "/v1/chat/completions"}
        body = {"model": "auto", "max_tokens": 8}
        warm = root / "warm.jsonl"  # builds the tiny models before the disk fills
        warm.write_text(
            "".join(
                json.dumps(
                    {
                        **line,
                        "custom_id": f"w{i}",
                        "body": {**body, "messages": [{"role": "user", "content": f"warm {i}"}]},
                    }
                )
                + "\n"
                for i in range(6)
            )
        )
        path = root / "requests.jsonl"
        path.write_text(
            "".join(
                json.dumps(
                    {
                        **line,
                        "custom_id": f"r{i}",
                        "body": {
                            **body,
                            "messages": [
                                {"role": "user", "content": f"Summarise item {i}: the grid."}
                            ],
                        },
                    }
                )
                + "\n"
                for i in range(REQUESTS)
            )
        )

        # Due at the end of the slot in progress, so the plan runs it now (a later deadline
        # lets it wait for a cleaner hour); gridshift's clock decides, as in service_path.py.
        from scheduler.clock import now_utc

        now = now_utc()
        slot_end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        if (slot_end - now).total_seconds() < args.full_s + args.timeout_s + 120:
            print(f"too close to the end of the hour ({slot_end:%H:%M}): run it after that")
            return 2

        def run(p: Path, fill_after_upload: bool) -> tuple[object, float]:
            nonlocal filler
            f = client.files.create(file=p.open("rb"), purpose="batch")
            if fill_after_upload:
                filler = _fill(disk)
            b = client.batches.create(
                input_file_id=f.id,
                endpoint="/v1/chat/completions",
                completion_window="24h",
                extra_body={"min_quality": 0.4, "deadline": slot_end.isoformat()},
            )
            return b, time.monotonic()

        warm_batch, t = run(warm, False)
        while client.batches.retrieve(warm_batch.id).status != "completed":  # type: ignore[attr-defined]
            if time.monotonic() - t > 180:
                print("warm-up batch did not complete", file=sys.stderr)
                return 1
            time.sleep(1)
        batch, full_since = run(path, True)
        presence: Counter[str] = Counter()
        while time.monotonic() - full_since < args.full_s:
            for (state,) in _query(url, "SELECT state FROM worker_presence"):
                presence[str(state)] += 1
            time.sleep(5)
        status_while_full = client.batches.retrieve(batch.id).status  # type: ignore[attr-defined]
        assert filler is not None
        filler.unlink()
        freed = time.monotonic()
        done = client.batches.retrieve(batch.id)  # type: ignore[attr-defined]
        while done.status not in ("completed", "failed", "expired", "cancelled"):
            if time.monotonic() - freed > args.timeout_s:
                break
            time.sleep(1)
            done = client.batches.retrieve(batch.id)  # type: ignore[attr-defined]
        out_lines = []
        if done.output_file_id:
            text = client.files.content(done.output_file_id).text
            out_lines = [json.loads(x)["custom_id"] for x in text.splitlines() if x.strip()]
        shards = {
            str(row[0]): row[1]
            for row in _query(
                url,
                f"SELECT status, count(*) FROM shards WHERE batch_id = '{done.id}' GROUP BY status",
            )
        }
        faults = _query(url, "SELECT count(*) FROM executions WHERE status = 'storage_fault'")[0][0]
        lost = _query(url, "SELECT count(*) FROM executions WHERE status = 'lost'")[0][0]
        counts = Counter(out_lines)
        ok = (
            done.status == "completed"
            and done.request_counts is not None
            and (done.request_counts.completed, done.request_counts.failed) == (REQUESTS, 0)
            and set(counts) == {f"r{i}" for i in range(REQUESTS)}
            and max(counts.values()) == 1
            and not shards.get("failed")
        )
        print(
            json.dumps(
                {
                    "full_s": args.full_s,
                    "status_while_full": status_while_full,
                    "status": done.status,
                    "completed_after_space_returned_s": round(time.monotonic() - freed, 1),
                    "request_counts": done.request_counts.model_dump()
                    if done.request_counts
                    else None,
                    "output_lines": len(out_lines),
                    "distinct_custom_ids": len(counts),
                    "shards_by_status": shards,
                    "storage_fault_attempts": faults,
                    "lease_expiries": lost,
                    "presence_states_seen_while_full": dict(presence),
                    "ok": ok,
                    "logs": str(logs),
                }
            )
        )
        return 0 if ok else 1
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        subprocess.run(["umount", "-l", str(disk)], check=False)
        with psycopg.connect(args.pg, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


if __name__ == "__main__":
    sys.exit(main())
