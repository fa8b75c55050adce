"""Fault check: ``gridshift dispatch`` started during a database blip still plans (issue 22).

On a fresh PostgreSQL database: ``serve`` takes a batch (due at the end of the slot in
progress); then every backend of the database is terminated every 0.1 s for ``--blip-s`` (8 s),
and ``gridshift dispatch`` is started 1 s into it. Prints, as JSON, how long after its start the
batch had shards (the issue's bar: within 60 s), how many backends were terminated, and the
dispatcher's ``/healthz`` ``planner`` detail. Before the fix the planner thread died at its
first lock acquisition and nothing was ever planned.

    python benchmarks/fault_planner_blip.py [--blip-s 8] [--pg postgresql://postgres@127.0.0.1/postgres]

Every process is started here and stopped by its pid; the database is dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from datetime import timedelta
from pathlib import Path

from benchmarks.service_path import GRIDSHIFT, _free_port, _gridshift, _wait_http


def _shards(url: str, batch_id: str) -> int | None:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            row = conn.execute(
                "SELECT count(*) FROM shards WHERE batch_id = %s", (batch_id,)
            ).fetchone()
            return int(row[0]) if row else 0
    except psycopg.Error:  # terminated too
        return None


def main() -> int:  # noqa: D103
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blip-s", type=float, default=8.0)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    import psycopg
    from openai import OpenAI

    from scheduler.clock import now_utc

    root = Path(tempfile.mkdtemp(prefix="gridshift-blip-"))
    db = f"gridshift_blip_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.pg, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    url = args.pg.rsplit("/", 1)[0] + f"/{db}"
    env = {
        **os.environ,
        "GRIDSHIFT_DATA_DIR": str(root / "data"),
        "GRIDSHIFT_DATABASE_URL": url,
        "GRIDSHIFT_TICK_S": "1",
    }
    for key in ("GRIDSHIFT_FLEET", "GRIDSHIFT_BROKER_URL"):
        env.pop(key, None)
    procs: list[subprocess.Popen[bytes]] = []
    stop = threading.Event()
    try:
        _gridshift("db", "upgrade", env=env)
        key = _gridshift("keys", "create", "--tenant", "acme", env=env).split()[-1]
        port, metrics = _free_port(), _free_port()

        def start(name: str, *cmd: str) -> None:
            out = (root / f"{name}.log").open("wb")
            procs.append(subprocess.Popen([GRIDSHIFT, *cmd], env=env, stdout=out, stderr=out))

        start("serve", "serve", "--port", str(port))
        _wait_http(f"http://127.0.0.1:{port}/healthz", 60)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key)
        path = root / "requests.jsonl"
        path.write_text(
            "".join(
                json.dumps(
                    {
                        "custom_id": f"r{i}",
                        "method": "POST",
                        "url": "/v1/chat/completions",
                        "body": {
                            "model": "auto",
                            "max_tokens": 8,
                            "messages": [{"role": "user", "content": f"item {i}"}],
                        },
                    }
                )
                + "\n"
                for i in range(4)
            )
        )
        now = now_utc()
        slot_end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        f = client.files.create(file=path.open("rb"), purpose="batch")
        batch = client.batches.create(
            input_file_id=f.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            extra_body={"min_quality": 0.4, "deadline": slot_end.isoformat()},
        )
        killed = [0]

        def blip() -> None:
            with psycopg.connect(args.pg, autocommit=True) as admin:
                end = time.monotonic() + args.blip_s
                while time.monotonic() < end and not stop.is_set():
                    rows = admin.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = %s AND pid <> pg_backend_pid()",
                        (db,),
                    ).fetchall()
                    killed[0] += sum(1 for (ok,) in rows if ok)
                    time.sleep(0.1)

        terminator = threading.Thread(target=blip, daemon=True)
        terminator.start()
        time.sleep(1.0)
        started = time.monotonic()
        start("dispatch", "dispatch", "--metrics-port", str(metrics))
        planned_after: float | None = None
        while time.monotonic() - started < 60:
            if _shards(url, batch.id):
                planned_after = time.monotonic() - started
                break
            time.sleep(0.5)
        terminator.join()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/healthz", timeout=5) as r:
                health = json.loads(r.read())
        except OSError as e:
            health = {"error": repr(e)}
        out = {
            "blip_s": args.blip_s,
            "backends_terminated": killed[0],
            "planned_after_dispatch_start_s": None
            if planned_after is None
            else round(planned_after, 1),
            "dispatcher_planner": health.get("planner"),
            "ok": planned_after is not None and planned_after <= 60,
            "logs": str(root),
        }
        print(json.dumps(out))
        return 0 if out["ok"] else 1
    finally:
        stop.set()
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        with psycopg.connect(args.pg, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


if __name__ == "__main__":
    sys.exit(main())
