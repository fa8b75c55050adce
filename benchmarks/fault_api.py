"""Fault check of the API (issue 22): half-open connections and slow uploads against a real
``gridshift serve`` on PostgreSQL. Loopback only, bounded, stops by itself; prints the figures.

    python benchmarks/fault_api.py --database-url postgresql://postgres@127.0.0.1:5432/DB \
        [--connections 5000] [--uploads 16] [--trickle-s 20]

Figures: ``/healthz`` latency with N half-open unauthenticated connections held (target < 2 s)
and the server log's growth meanwhile (target < 5 MB); a third tenant's read and ``/healthz``
latency with 16 slow uploads held (targets < 15 s and < 2 s). The peer figure is ``/healthz`` on
the idle server in the same run, and each loaded latency is printed as a ratio to it.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from scheduler.store.db import make_engine, session_factory
from scheduler.store.migrate import upgrade
from scheduler.store.tenants import create_api_key


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _timed(url: str, **kw: object) -> float:
    t0 = time.monotonic()
    requests.get(url, timeout=30, **kw).raise_for_status()  # type: ignore[arg-type]
    return time.monotonic() - t0


def _half_open(port: int, n: int, url: str, log: Path) -> None:
    idle = min(_timed(url + "/healthz") for _ in range(5))
    size0 = log.stat().st_size
    socks = []
    try:
        for _ in range(n):
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n")
                socks.append(s)
            except OSError:
                break
        loaded = max(_timed(url + "/healthz") for _ in range(5))
        grown = log.stat().st_size - size0
        print(f"half-open connections held: {len(socks)} of {n}")
        print(
            f"  /healthz idle {idle * 1000:.1f} ms, with them (max of 5) {loaded * 1000:.1f} ms"
            f" ({loaded / idle:.1f} x); target < 2 s: {'ok' if loaded < 2 else 'MISSED'}"
        )
        print(
            f"  server log grew {grown / 1e6:.3f} MB; target < 5 MB: "
            f"{'ok' if grown < 5e6 else 'MISSED'}"
        )
    finally:
        for s in socks:
            s.close()


def _slow_uploads(url: str, keys: list[str], n: int, trickle_s: float) -> None:
    idle = min(_timed(url + "/healthz") for _ in range(5))
    barrier = threading.Barrier(n + 1)

    def body() -> Iterator[bytes]:
        yield b'--zz\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        for _ in range(int(trickle_s / 0.5)):
            time.sleep(0.5)
            yield b" "
        yield b"--zz--\r\n"

    def upload(key: str) -> int:
        barrier.wait()
        head = {
            "Authorization": f"Bearer {key}",
            "Content-Type": "multipart/form-data; boundary=zz",
        }
        return requests.post(url + "/v1/files", headers=head, data=body(), timeout=600).status_code

    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(upload, keys[i % 2]) for i in range(n)]
        barrier.wait()
        time.sleep(2)
        read = _timed(url + "/v1/models", headers={"Authorization": f"Bearer {keys[2]}"})
        health = _timed(url + "/healthz")
        held = sum(not f.done() for f in futures)
        statuses = sorted(f.result() for f in futures)
    print(f"slow uploads held: {held} of {n} (answers afterwards: {statuses})")
    print(
        f"  another tenant's read {read * 1000:.1f} ms ({read / idle:.1f} x idle /healthz); "
        f"target < 15 s: {'ok' if read < 15 else 'MISSED'}"
    )
    print(
        f"  /healthz {health * 1000:.1f} ms ({health / idle:.1f} x idle); target < 2 s: "
        f"{'ok' if health < 2 else 'MISSED'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--uploads", type=int, default=16)
    parser.add_argument("--trickle-s", type=float, default=20.0)
    args = parser.parse_args()
    engine = make_engine(args.database_url)
    upgrade(engine)
    with session_factory(engine)() as s:
        keys = [create_api_key(s, f"fault-{i}-{os.getpid()}") for i in range(3)]
        s.commit()
    engine.dispose()
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "serve.log"
        env = {
            **os.environ,
            "GRIDSHIFT_DATABASE_URL": args.database_url,
            "GRIDSHIFT_DATA_DIR": str(Path(tmp) / "data"),
        }
        exe = str(Path(sys.executable).with_name("gridshift"))
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [exe, "serve", "--port", str(port)], env=env, stdout=out, stderr=out
            )
            url = f"http://127.0.0.1:{port}"
            try:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        if requests.get(url + "/healthz", timeout=1).ok:
                            break
                    except requests.ConnectionError:
                        pass
                    if proc.poll() is not None or time.monotonic() > deadline:
                        sys.exit("gridshift serve did not start")
                    time.sleep(0.2)
                _half_open(port, args.connections, url, log)
                _slow_uploads(url, keys, args.uploads, args.trickle_s)
            finally:
                proc.terminate()
                proc.wait(timeout=30)


if __name__ == "__main__":
    main()
