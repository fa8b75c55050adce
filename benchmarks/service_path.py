"""The README's service path on a fresh data dir: time to a completed batch, planned vs booked.

Runs exactly the README's steps with the sample fleet (no GRIDSHIFT_FLEET): ``gridshift db
upgrade``, ``keys create``, ``serve`` (on a free port), ``dispatch``, one ``worker`` per sample
pool (the tiny models build themselves on first use), then submits a batch with the official
``openai`` client, due at the end of the slot in progress (so it runs now at any hour), waits
for it, and prints the batch's planned and booked energy and CO2 from its ``gridshift`` field,
with their ratio.

    python benchmarks/service_path.py [--requests 12] [--timeout-s 180] [--hosted]

``--hosted`` sends the file a hosted API user would: chat lines naming ``gpt-4o-mini`` (a
sample-fleet alias for ``auto``) with ``max_tokens: 1000``, and no ``min_quality``; the tiny
random-weight model then generates about 1,000 tokens a line on CPU, so give it minutes
(``--timeout-s 600``; 15 lines took 180 s of generation on a loaded 2-core machine).

Every process is started here and stopped by its pid at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

GRIDSHIFT = str(Path(sys.executable).parent / "gridshift")  # the console script of this venv
POOLS = (("gb-london", "cpu"), ("de-frankfurt", "cpu"), ("es-madrid", "cpu"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _gridshift(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [GRIDSHIFT, *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return done.stdout.strip()


def _wait_http(url: str, timeout_s: float) -> None:
    import urllib.request

    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout_s} s")


def main() -> int:  # noqa: D103
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=12)
    parser.add_argument("--timeout-s", type=float, default=180.0)
    parser.add_argument("--data-dir", type=Path, help="fresh data dir (default: a temp dir)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--hosted", action="store_true", help="a hosted file: gpt-4o-mini, max_tokens 1000"
    )
    args = parser.parse_args()
    from openai import OpenAI

    data = args.data_dir or Path(tempfile.mkdtemp(prefix="gridshift-service-"))
    data.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GRIDSHIFT_DATA_DIR": str(data), "GRIDSHIFT_TICK_S": "2"}
    for key in ("GRIDSHIFT_FLEET", "GRIDSHIFT_DATABASE_URL", "GRIDSHIFT_BROKER_URL"):
        env.pop(key, None)
    procs: list[subprocess.Popen[bytes]] = []
    logs = data / "logs"
    logs.mkdir()
    t0 = time.monotonic()
    try:
        _gridshift("db", "upgrade", env=env)
        key = _gridshift("keys", "create", "--tenant", "acme", env=env).split()[-1]
        port = _free_port()

        def start(name: str, *cmd: str) -> None:
            out = (logs / f"{name}.log").open("wb")
            procs.append(
                subprocess.Popen(
                    [GRIDSHIFT, *cmd],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )

        start("serve", "serve", "--port", str(port))
        start("dispatch", "dispatch")
        for site, pool in POOLS:
            start(f"worker-{site}", "worker", "--site", site, "--pool", pool)
        _wait_http(f"http://127.0.0.1:{port}/healthz", 60)
        ready_s = time.monotonic() - t0
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key)
        model, max_tokens = ("gpt-4o-mini", 1000) if args.hosted else ("auto", 16)
        lines = [
            {
                "custom_id": f"r{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": model,
                    "messages": [{"role": "user", "content": f"Summarise item {i}: the grid."}],
                    "max_tokens": max_tokens,
                },
            }
            for i in range(args.requests)
        ]
        path = data / "requests.jsonl"
        path.write_text("".join(json.dumps(x) + "\n" for x in lines))
        # Due at the end of the slot in progress, so the plan can only run it now: a later
        # deadline lets the plan wait for a cleaner next hour (the sample's synthetic carbon
        # falls through some evenings), and whether it does depends on the hour of the run.
        # gridshift's clock (GRIDSHIFT_CLOCK, inherited by the servers started above) decides.
        from scheduler.clock import now_utc

        now = now_utc()
        slot_end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        if slot_end - now < timedelta(minutes=3):
            time.sleep((slot_end - now).total_seconds() + 1)
            slot_end += timedelta(hours=1)
        submitted = time.monotonic()
        f = client.files.create(file=path.open("rb"), purpose="batch")
        deadline = slot_end.isoformat()
        batch = client.batches.create(
            input_file_id=f.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            extra_body={"deadline": deadline, **({} if args.hosted else {"min_quality": 0.4})},
        )
        while batch.status not in ("completed", "failed", "expired", "cancelled"):
            if time.monotonic() - submitted > args.timeout_s:
                print(f"TIMEOUT after {args.timeout_s:.0f} s: status {batch.status}")
                return 1
            time.sleep(1.0)
            batch = client.batches.retrieve(batch.id)
        took = time.monotonic() - submitted
        gs = (batch.model_extra or {})["gridshift"]
        planned, actual = gs["planned"], gs["actual"]
        if args.json:
            out = {
                "status": batch.status,
                "ready_s": ready_s,
                "took_s": took,
                "data_dir": str(data),
                "request_counts": batch.request_counts.model_dump() if batch.request_counts else {},
            }
            print(json.dumps({**out, "planned": planned, "actual": actual, "parts": gs["parts"]}))
            return 0 if batch.status == "completed" else 1
        print(f"servers ready in {ready_s:.1f} s; batch {batch.status} in {took:.1f} s")
        print(f"request_counts: {batch.request_counts}")
        print(f"energy method: {gs.get('energy_method')}")
        for name in ("energy_kwh", "co2_g", "water_l", "cost"):
            p, a = planned[name], actual[name]
            ratio = a / p if p else float("nan")
            print(f"{name:>10}: planned {p:.6g}  booked {a:.6g}  booked/planned {ratio:.3f}")
        planned_in = sum(x["input_tokens"] for x in gs["parts"])
        planned_out = sum(x["output_tokens"] for x in gs["parts"])
        with sqlite3.connect(data / "gridshift.db") as db:
            got_in, got_out = db.execute(
                "SELECT SUM(input_tokens), SUM(output_tokens) FROM ledger_entries"
            ).fetchone()
        print(
            f"tokens in/out: planned (estimate) {planned_in:.0f}/{planned_out:.0f}, "
            f"counted by the engine {got_in}/{got_out}; data dir {data}"
        )
        return 0 if batch.status == "completed" else 1
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    sys.exit(main())
