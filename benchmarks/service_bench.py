"""Service benchmark: a real `gridshift serve` and `gridshift planner` on PostgreSQL at scale.

For each N, on a fresh PostgreSQL database: start `gridshift serve` and `gridshift planner`
(own processes) and `gridshift dispatch --no-planner` (the tick loop), submit N batches through
the API (2 requests each), with forecasts (a CSV provider) that make the grid dirty now and
clean 6-12 hours on, so the work is planned into later slots and stays planned. Then:

- ``new batch -> planned``: one more batch is created through the API; the time until its
  first shard exists (the planner debounces, re-plans, stores), three tries (median, max);
- ``tick while re-planning``: a batch arrives (a re-plan starts), and while that re-plan runs a
  tick (`scheduler.dispatch.tick.tick`, in this process, clock at the clean slot so that
  shards are due) queues the due shards; its wall time is printed with the re-plan's, so the
  overlap is visible. The tick's send is a no-op (it measures the store, not the broker);
- ``rows/re-plan``: rows the incremental re-plan wrote (from the plan's notes);
- peak RSS (``VmHWM``) of the dispatcher and planner processes.

Usage::

    python benchmarks/service_bench.py [--sizes 100,1000,5000] [--pg postgresql://...]

Needs PostgreSQL (default ``postgresql://postgres@127.0.0.1:5432/postgres``; a database
``gs_bench_<random>`` is created and dropped per size). Target: at 5,000 open batches a new
batch is planned within 10 s of its creation (10,000 within 10 s is the stretch target).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

FLEET = """\
slot_minutes: 60
defaults: {objectives: [carbon, cost, delay], tolerances: [0.01, 0.0, 0.0]}
sites:
  - name: site-a
    pue: 1.2
    wue_l_per_kwh: 0.5
    ewif_l_per_kwh: 1.5
    signals:
      carbon: {provider: csv, path: forecasts.csv}
      price: {provider: csv, path: forecasts.csv}
    pools: [{name: cpu, gpu: CPU, count: 8}]
  - name: site-b
    pue: 1.3
    wue_l_per_kwh: 0.3
    ewif_l_per_kwh: 1.8
    signals:
      carbon: {provider: csv, path: forecasts.csv}
      price: {provider: csv, path: forecasts.csv}
    pools: [{name: cpu, gpu: CPU, count: 8}]
models:
  - name: tiny-chat
    quality: 0.6
    expected_output_fraction: 0.6
    profiles: {CPU: {gpus: 1, prefill_tok_s: 500, decode_tok_s: 50, power_w: 30}}
"""


def _forecasts(path: Path, now: datetime) -> None:
    """Dirty and dear now, clean and cheap 6-12 h on (site-b a little cleaner)."""
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    rows = ["time,site,carbon_g_per_kwh,price_per_kwh,renewable_kw"]
    for h in range(80):
        t = start + timedelta(hours=h)
        clean = 8 <= h < 14
        for site, k in (("site-a", 1.0), ("site-b", 0.9)):
            carbon = (40.0 if clean else 450.0 + 5 * (h % 7)) * k
            rows.append(f"{t:%Y-%m-%dT%H:%M:%SZ},{site},{carbon:.1f},{0.05 if clean else 0.3},0")
    path.write_text("\n".join(rows) + "\n")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _admin(pg: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(pg, autocommit=True) as c:
        c.execute(sql)  # type: ignore[arg-type]


def _peak_mib(pid: int) -> float:
    """Peak RSS (VmHWM) of ``pid`` plus that of its live children (the planner's full re-plan
    process), MiB."""
    total = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            total += int(line.split()[1]) / 1024
    children = Path(f"/proc/{pid}/task/{pid}/children")
    for child in children.read_text().split() if children.exists() else []:
        with contextlib.suppress(OSError):
            total += _peak_mib(int(child))
    return total


def _wait(cond: Any, timeout_s: float, what: str, every_s: float = 0.05) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout_s:
        if cond():
            return time.perf_counter() - start
        time.sleep(every_s)
    raise TimeoutError(f"waited {timeout_s:.0f} s for {what}")


def run_size(n: int, pg: str, gridshift: str, full_every_s: float = 120.0) -> dict[str, Any]:
    """Measure one size on a fresh database; returns the figures."""
    from sqlalchemy import func, select

    from scheduler.client import GridshiftClient
    from scheduler.config import Settings
    from scheduler.dispatch.tick import tick
    from scheduler.fleet import load_fleet
    from scheduler.store.db import make_engine, session_factory
    from scheduler.store.tables import PlanRecord, Shard

    name = f"gs_bench_{uuid.uuid4().hex[:10]}"
    _admin(pg, f'CREATE DATABASE "{name}"')
    url = pg.rsplit("/", 1)[0] + f"/{name}"
    procs: list[subprocess.Popen[bytes]] = []
    tmp = Path(tempfile.mkdtemp(prefix="gs-service-bench-"))
    now = datetime.now(UTC)
    try:
        (tmp / "fleet.yaml").write_text(FLEET)
        _forecasts(tmp / "forecasts.csv", now)
        env = {
            **os.environ,
            "GRIDSHIFT_DATABASE_URL": url,
            "GRIDSHIFT_DATA_DIR": str(tmp / "data"),
            "GRIDSHIFT_FLEET": str(tmp / "fleet.yaml"),
            "GRIDSHIFT_BROKER_URL": "memory://",
            "GRIDSHIFT_PLANNER_POLL_S": "0.2",
            "GRIDSHIFT_PLANNER_DEBOUNCE_S": "0.5",
            "GRIDSHIFT_PLANNER_FULL_EVERY_S": str(full_every_s),
            # one tenant stands for many: lift the per-tenant quotas (not what is measured)
            "GRIDSHIFT_TENANT_MAX_BATCHES_IN_FLIGHT": "1000000",
            "GRIDSHIFT_TENANT_REQUESTS_PER_MINUTE": "1000000",
        }
        subprocess.run([gridshift, "db", "upgrade"], env=env, check=True, capture_output=True)
        key = subprocess.run(
            [gridshift, "keys", "create", "--tenant", "bench"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        port = _free_port()
        logs = {p: (tmp / f"{p}.log").open("wb") for p in ("serve", "planner", "dispatch")}
        serve = subprocess.Popen(
            [gridshift, "serve", "--port", str(port), "--no-upgrade-db"],
            env=env,
            stdout=logs["serve"],
            stderr=subprocess.STDOUT,
        )
        procs.append(serve)
        client = GridshiftClient(f"http://127.0.0.1:{port}", key)
        _wait(lambda: _up(client), 60, "gridshift serve", every_s=0.2)
        line = {
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "tiny-chat",
                "messages": [{"role": "user", "content": "Summarise: the grid is clean at night."}],
                "max_tokens": 16,
            },
        }
        content = "".join(
            json.dumps({"custom_id": f"r{i}", **line}) + "\n" for i in range(2)
        ).encode()
        file_id = client.upload_file("in.jsonl", content)["id"]

        def create(_: int) -> str:
            b = client.create_batch(
                file_id, endpoint="/v1/chat/completions", options={"completion_window": "24h"}
            )
            return str(b["id"])

        # The planner starts after the bulk arrival, as after a restart with work waiting.
        started = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            ids = list(pool.map(create, range(n)))
        submit_s = time.perf_counter() - started
        planner = subprocess.Popen(
            [gridshift, "planner"], env=env, stdout=logs["planner"], stderr=subprocess.STDOUT
        )
        dispatcher = subprocess.Popen(
            [gridshift, "dispatch", "--no-planner"],
            env=env,
            stdout=logs["dispatch"],
            stderr=subprocess.STDOUT,
        )
        procs += [planner, dispatcher]
        sessions = session_factory(make_engine(url))

        def planned(batch_id: str) -> bool:
            with sessions() as s:
                return bool(s.scalar(select(Shard.id).where(Shard.batch_id == batch_id).limit(1)))

        def planned_all() -> bool:
            with sessions() as s:
                got = s.scalar(select(func.count(func.distinct(Shard.batch_id))))
            return int(got or 0) >= n

        bulk_s = _wait(planned_all, 900, f"the planner to plan {n} batches", every_s=0.5)
        latencies = []
        for _ in range(3):
            t0 = time.perf_counter()
            bid = create(0)
            _wait(lambda bid=bid: planned(bid), 300, "one new batch to be planned")  # type: ignore[misc]
            latencies.append(time.perf_counter() - t0)
            time.sleep(1.0)
        with sessions() as s:
            last = s.scalars(select(PlanRecord).order_by(PlanRecord.id.desc()).limit(1)).one()
        rows = _rows(last.notes or [])
        # A tick for due shards while a re-plan runs: a new batch starts one, then tick.
        bid = create(0)
        time.sleep(0.8)  # past the planner's 0.5 s debounce: the re-plan is under way
        settings = Settings(database_url=url, data_dir=tmp / "data")
        fleet = load_fleet(tmp / "fleet.yaml")
        clean = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=6, minutes=1)
        t0 = time.perf_counter()
        report = tick(
            sessions, settings, clean, lambda *a, **k: None, fleet=fleet, allow_replan=False
        )
        tick_s = time.perf_counter() - t0
        replan_running = not planned(bid)  # the batch's re-plan outlasted the whole tick
        _wait(lambda: planned(bid), 300, "the overlapping re-plan to finish")
        peaks = {"dispatcher": _peak_mib(dispatcher.pid), "planner": _peak_mib(planner.pid)}
        return {
            "n": n,
            "full_every_s": full_every_s,
            "full_replans": _count(tmp / "planner.log", "INFO scheduler.dispatch.replan: plan "),
            "submit_per_s": n / submit_s,
            "bulk_plan_s": bulk_s,
            "new_batch_s": latencies,
            "tick_s": tick_s,
            "tick_queued": len(report.queued),
            "tick_during_replan": replan_running,
            "rows": rows,
            "peak_mib": peaks,
            "ids": len(ids),
        }
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        _admin(pg, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _up(client: Any) -> bool:
    try:
        client._json("GET", "/v1/batches?limit=1")
        return True
    except Exception:
        return False


def _count(path: Path, text: str) -> int:
    return sum(text in line for line in path.read_text(errors="replace").splitlines())


def _rows(notes: list[str]) -> int | None:
    for note in reversed(notes):  # the newest write (a fast-path addition ends the notes)
        m = re.search(r"store: (\d+) rows written", note)
        if m:
            return int(m.group(1))
    return None


def main() -> None:
    """Run each size and print a table."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="100,1000,5000")
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument(
        "--full-every-s",
        type=float,
        default=120.0,
        help="GRIDSHIFT_PLANNER_FULL_EVERY_S; small values keep a full re-plan running while "
        "new batches arrive (their fast path runs beside it)",
    )
    args = ap.parse_args()
    gridshift = str(Path(sys.executable).with_name("gridshift"))
    results = []
    for n in (int(x) for x in args.sizes.split(",")):
        r = run_size(n, args.pg, gridshift, args.full_every_s)
        results.append(r)
        print(json.dumps(r), flush=True)
    print()
    print(
        "| open batches | new batch -> planned (median / max of 3) | bulk arrival planned "
        "| tick for due shards during a re-plan | rows written for the last new batch "
        "| dispatcher peak RSS | planner peak RSS |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        lat = r["new_batch_s"]
        print(
            f"| {r['n']:,} | {statistics.median(lat):.1f} s / {max(lat):.1f} s "
            f"| {r['bulk_plan_s']:.1f} s | {r['tick_s']:.2f} s ({r['tick_queued']} shards queued"
            f"{', re-plan running' if r['tick_during_replan'] else ''}) | {r['rows']} "
            f"| {r['peak_mib']['dispatcher']:.0f} MiB | {r['peak_mib']['planner']:.0f} MiB |"
        )
    print("target: a new batch planned within 10 s of its creation at 5,000 open batches")


if __name__ == "__main__":
    main()
