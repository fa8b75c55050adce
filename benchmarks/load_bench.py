"""Load and hostile-input benchmark against a real ``gridshift serve`` (SQLite and PostgreSQL).

For each database it starts ``gridshift serve`` in its own process on a free 127.0.0.1 port and:

1. **hostile**: streams a 300 MB chunked body with no key at ``POST /v1/batches`` and reports
   the server's RSS growth (target < 100 MB) and the answer;
2. **load**: N tenants upload files, create batches and poll them concurrently; prints
   throughput, p50/p95 latency per operation and every status code;
3. **burst**: one tenant sends 60 concurrent creates of a 20,000-request file (no 5xx allowed;
   429/503 must carry Retry-After);
4. **check**: every file and batch that was accepted is retrieved again (must all be 200, with
   the request counts they were created with).

Usage::

    python benchmarks/load_bench.py [--databases sqlite,postgresql] [--tenants 6]
        [--rounds 5] [--burst 60] [--burst-requests 20000] [--pg-admin-url URL]

The peer figure is ``/healthz`` latency on the idle server: the load section prints its
p95 under load as a ratio to that.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.intake_bench import FLEET_YAML  # noqa: E402  (the same small fleet)

MiB = 1024 * 1024
MAX_FILE_BYTES = 20 * MiB  # the server's upload limit in this benchmark
GRIDSHIFT = str(Path(sys.executable).parent / "gridshift")
CHAT = "/v1/chat/completions"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def jsonl(n: int, tag: str) -> bytes:
    line = {"custom_id": "", "method": "POST", "url": CHAT}
    out = []
    for i in range(n):
        line["custom_id"] = f"{tag}-{i}"
        line["body"] = {
            "model": "tiny-chat",
            "messages": [{"role": "user", "content": f"Summarise item {i} of {tag}."}],
            "max_tokens": 16,
        }
        out.append(json.dumps(line))
    return ("\n".join(out) + "\n").encode()


class Server:
    """``gridshift serve`` in a subprocess with its own data dir and database."""

    def __init__(self, workdir: Path, database_url: str, admin_key: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        (workdir / "fleet.yaml").write_text(FLEET_YAML)
        env = {
            **os.environ,
            "GRIDSHIFT_DATA_DIR": str(workdir / "data"),
            "GRIDSHIFT_DATABASE_URL": database_url,
            "GRIDSHIFT_FLEET": str(workdir / "fleet.yaml"),
            "GRIDSHIFT_ADMIN_KEY": admin_key,
            "GRIDSHIFT_MAX_FILE_BYTES": str(MAX_FILE_BYTES),
        }
        self.log = (workdir / "serve.log").open("wb")
        self.proc = subprocess.Popen(
            [GRIDSHIFT, "serve", "--port", str(self.port)],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(self.base + "/healthz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.2)
        raise RuntimeError(f"gridshift serve did not start; see {workdir / 'serve.log'}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)
        self.log.close()


MULTIPART_START = (
    b'--x\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n'
    b"Content-Type: application/octet-stream\r\n\r\n"
)


def hostile(
    server: Server, total: int = 300 * MiB, *, key: str | None = None, upload: bool = False
) -> dict[str, Any]:
    """Stream ``total`` bytes chunked (JSON to /v1/batches, or a multipart upload to /v1/files),
    with or without a key; return the answer, what was sent, and the server's RSS growth."""
    before = rss_mb(server.proc.pid)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    path, ctype = (
        ("/v1/files", "multipart/form-data; boundary=x")
        if upload
        else (
            "/v1/batches",
            "application/json",
        )
    )
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n{auth}"
        f"Content-Type: {ctype}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    sock.sendall(head.encode())
    if upload:
        sock.sendall(f"{len(MULTIPART_START):x}\r\n".encode() + MULTIPART_START + b"\r\n")
    chunk = 256 * 1024
    piece = f"{chunk:x}\r\n".encode() + b"x" * chunk + b"\r\n"
    sent = 0
    peak = before
    sock.settimeout(2)
    while sent < total:
        if select.select([sock], [], [], 0)[0]:
            break
        try:
            sock.sendall(piece)
        except OSError:
            break
        sent += chunk
        peak = max(peak, rss_mb(server.proc.pid))
    sock.settimeout(10)
    answer = sock.recv(4096).split(b"\r\n", 1)[0].decode(errors="replace")
    sock.close()
    peak = max(peak, rss_mb(server.proc.pid))
    return {"answer": answer, "sent_mb": sent / MiB, "rss_growth_mb": peak - before}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class Recorder:
    def __init__(self) -> None:
        self.lat: dict[str, list[float]] = defaultdict(list)
        self.status: Counter[tuple[str, int]] = Counter()
        self.missing_retry_after = 0
        self.lock = threading.Lock()

    def call(self, op: str, method: str, url: str, key: str, **kw: Any) -> requests.Response:
        t = time.perf_counter()
        r = requests.request(
            method, url, headers={"Authorization": f"Bearer {key}"}, timeout=300, **kw
        )
        with self.lock:
            self.lat[op].append(time.perf_counter() - t)
            self.status[(op, r.status_code)] += 1
            if r.status_code in (429, 503) and "retry-after" not in r.headers:
                self.missing_retry_after += 1
        return r


def make_keys(server: Server, admin: str, tenants: int) -> list[str]:
    """Keys for ``tenants`` fresh tenants, created through ``gridshift keys create``."""
    env = {**os.environ, "GRIDSHIFT_DATABASE_URL": server_db[server.base]}
    keys = []
    for _ in range(tenants):
        out = subprocess.run(
            [GRIDSHIFT, "keys", "create", "--tenant"] + [f"load-{uuid.uuid4().hex[:6]}"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        keys.append(next(w for w in out.split() if w.startswith("gs-")))
    return keys


server_db: dict[str, str] = {}


def load(
    server: Server, keys: list[str], rounds: int, requests_per_file: int
) -> tuple[Recorder, dict[str, tuple[str, str, int]], float]:
    """Each tenant: ``rounds`` x (upload, create, poll x3, list). Return recorder, accepted
    objects (id -> (kind, key, requests)) and wall seconds."""
    rec = Recorder()
    accepted: dict[str, tuple[str, str, int]] = {}
    lock = threading.Lock()

    def tenant(key: str) -> None:
        for r in range(rounds):
            body = jsonl(requests_per_file, f"{key[3:9]}-{r}")
            up = rec.call(
                "upload",
                "POST",
                server.base + "/v1/files",
                key,
                files={"file": ("in.jsonl", body)},
                data={"purpose": "batch"},
            )
            if up.status_code != 200:
                continue
            fid = up.json()["id"]
            with lock:
                accepted[fid] = ("file", key, len(body))
            cr = rec.call(
                "create",
                "POST",
                server.base + "/v1/batches",
                key,
                json={"input_file_id": fid, "endpoint": CHAT, "completion_window": "24h"},
            )
            if cr.status_code == 200:
                with lock:
                    accepted[cr.json()["id"]] = ("batch", key, requests_per_file)
                for _ in range(3):
                    rec.call("poll", "GET", server.base + f"/v1/batches/{cr.json()['id']}", key)
            rec.call("list", "GET", server.base + "/v1/batches?limit=20", key)

    health: list[float] = []
    stop = threading.Event()

    def probe() -> None:
        while not stop.is_set():
            t = time.perf_counter()
            requests.get(server.base + "/healthz", timeout=120)
            health.append(time.perf_counter() - t)
            time.sleep(0.2)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(len(keys)) as pool:
        list(pool.map(tenant, keys))
    wall = time.perf_counter() - t0
    stop.set()
    prober.join()
    rec.lat["healthz (under load)"] = health
    return rec, accepted, wall


def burst(
    server: Server, key: str, n: int, requests_per_file: int
) -> tuple[Recorder, dict[str, tuple[str, str, int]], float]:
    """``n`` concurrent creates of one ``requests_per_file`` file by one tenant."""
    rec = Recorder()
    up = rec.call(
        "upload",
        "POST",
        server.base + "/v1/files",
        key,
        files={"file": ("big.jsonl", jsonl(requests_per_file, "burst"))},
        data={"purpose": "batch"},
    )
    up.raise_for_status()
    fid = up.json()["id"]
    body = {"input_file_id": fid, "endpoint": CHAT}
    barrier = threading.Barrier(n)
    accepted: dict[str, tuple[str, str, int]] = {}

    def create(_: int) -> None:
        barrier.wait()
        r = rec.call("create (burst)", "POST", server.base + "/v1/batches", key, json=body)
        if r.status_code == 200:
            accepted[r.json()["id"]] = ("batch", key, requests_per_file)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        list(pool.map(create, range(n)))
    return rec, accepted, time.perf_counter() - t0


def check(server: Server, accepted: dict[str, tuple[str, str, int]]) -> tuple[int, int]:
    """Retrieve every accepted object; return (ok, total)."""
    ok = 0
    for oid, (kind, key, size) in accepted.items():
        path = f"/v1/files/{oid}" if kind == "file" else f"/v1/batches/{oid}"
        r = requests.get(server.base + path, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        if r.status_code != 200:
            continue
        got = r.json()
        good = got["bytes"] == size if kind == "file" else (got["request_counts"]["total"] == size)
        ok += bool(good)
    return ok, len(accepted)


def report(title: str, rec: Recorder, wall: float) -> None:
    calls = sum(len(v) for k, v in rec.lat.items() if not k.startswith("healthz"))
    print(f"  {title}: {calls} requests in {wall:.1f} s = {calls / wall:.1f} req/s")
    for op, values in rec.lat.items():
        print(
            f"    {op:22s} n={len(values):4d} p50={pct(values, 0.5) * 1000:8.1f} ms "
            f"p95={pct(values, 0.95) * 1000:8.1f} ms"
        )
    codes = ", ".join(f"{op} {code}: {n}" for (op, code), n in sorted(rec.status.items()))
    print(f"    status codes: {codes}")
    if rec.missing_retry_after:
        print(f"    !! {rec.missing_retry_after} answers 429/503 WITHOUT Retry-After")


def run(database: str, args: argparse.Namespace) -> bool:
    work = Path(tempfile.mkdtemp(prefix=f"gridshift-load-{database}-"))
    dbname = None
    if database == "sqlite":
        url = f"sqlite:///{work / 'gs.db'}"
    else:
        import psycopg

        dbname = f"gridshift_load_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(args.pg_admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{dbname}"')
        url = args.pg_admin_url.rsplit("/", 1)[0] + f"/{dbname}"
    admin = "gs-admin-" + uuid.uuid4().hex
    server = Server(work, url, admin)
    server_db[server.base] = url
    good = True
    try:
        print(f"== {database} (gridshift serve pid {server.proc.pid}, {server.base})")
        idle = []
        for _ in range(20):
            t = time.perf_counter()
            requests.get(server.base + "/healthz", timeout=10)
            idle.append(time.perf_counter() - t)
        h = hostile(server)
        print(
            f"  hostile: 300 MB chunked, no key -> {h['answer']!r} after {h['sent_mb']:.1f} MB "
            f"sent; server RSS grew {h['rss_growth_mb']:.1f} MB (target < 100 MB)"
        )
        good &= h["rss_growth_mb"] < 100 and " 401 " in h["answer"] + " "
        keys = make_keys(server, admin, args.tenants + 1)
        spool = Path(tempfile.gettempdir())
        spool_before = sum(p.stat().st_size for p in spool.glob("tmp*") if p.is_file())
        k = hostile(server, 100 * MiB, key=keys[0], upload=True)
        spool_after = sum(p.stat().st_size for p in spool.glob("tmp*") if p.is_file())
        print(
            f"  hostile: 100 MB chunked upload with a key, limit {MAX_FILE_BYTES // MiB} MB -> "
            f"{k['answer']!r} after {k['sent_mb']:.1f} MB sent; server RSS grew "
            f"{k['rss_growth_mb']:.1f} MB; temp files left {(spool_after - spool_before) / MiB:.1f} MB"
        )
        good &= " 413 " in k["answer"] + " " and k["sent_mb"] < 60
        rec, accepted, wall = load(server, keys[:-1], args.rounds, args.requests)
        report(f"load ({args.tenants} tenants x {args.rounds} rounds)", rec, wall)
        p95_idle = pct(idle, 0.95)
        p95_load = pct(rec.lat["healthz (under load)"], 0.95)
        print(
            f"    /healthz p95 idle {p95_idle * 1000:.1f} ms, under load "
            f"{p95_load * 1000:.1f} ms ({p95_load / p95_idle:.1f} x)"
        )
        brec, baccepted, bwall = burst(server, keys[-1], args.burst, args.burst_requests)
        report(
            f"burst ({args.burst} concurrent creates of a {args.burst_requests}-request file)",
            brec,
            bwall,
        )
        accepted.update(baccepted)
        fives = sum(n for (_, code), n in {**rec.status, **brec.status}.items() if code >= 500)
        ok, total = check(server, accepted)
        print(f"  check: {ok}/{total} accepted files and batches retrieved intact; 5xx: {fives}")
        good &= ok == total and fives == 0
        good &= rec.missing_retry_after == 0 and brec.missing_retry_after == 0
    finally:
        server.stop()
        if dbname:
            import psycopg

            with psycopg.connect(args.pg_admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    print(f"  verdict: {'PASS' if good else 'FAIL'}")
    return good


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--tenants", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=500, help="requests per load file")
    parser.add_argument("--burst", type=int, default=60)
    parser.add_argument("--burst-requests", type=int, default=20_000)
    parser.add_argument(
        "--pg-admin-url",
        default=os.environ.get(
            "GRIDSHIFT_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    args = parser.parse_args()
    results = [run(db, args) for db in args.databases.split(",")]
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
