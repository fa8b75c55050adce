"""Helpers for the Celery end-to-end tests: settings, API thread, worker subprocess, dispatch, waits."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import Settings
from scheduler.dispatch.slots import slot_floor
from scheduler.dispatch.tick import TickReport, tick
from scheduler.domain import Fleet
from scheduler.store.db import make_engine
from scheduler.store.migrate import upgrade
from scheduler.store.tables import Shard, now_utc

SITE, POOL = "e2e-site", "cpu"


TRANSFORMERS_ENGINE = {"kind": "transformers", "device": "cpu", "max_batch_size": 8}


def write_fleet(path: Path, weights: Path, engine: dict[str, Any] | None = None) -> Path:
    """A one-site fleet with a CPU pool running ``tiny-chat`` from ``weights``; synthetic signals.

    ``engine`` is the pool's engine block (default: transformers on the CPU).
    """
    fleet = {
        "slot_minutes": 60,
        "sites": [
            {
                "name": SITE,
                "pue": 1.25,
                "wue_l_per_kwh": 0.3,
                "ewif_l_per_kwh": 1.5,
                "market_factor_g_per_kwh": 40,
                "signals": {
                    "carbon": {"provider": "synthetic"},
                    "price": {"provider": "synthetic"},
                },
                "pools": [
                    {
                        "name": POOL,
                        "gpu": "CPU",
                        "count": 1,
                        "embodied_g_per_gpu_hour": 2.0,
                        "engine": engine or TRANSFORMERS_ENGINE,
                    }
                ],
            }
        ],
        "models": [
            {
                "name": "tiny-chat",
                "quality": 0.6,
                "weights": str(weights),
                "profiles": {
                    "CPU": {"gpus": 1, "prefill_tok_s": 2000, "decode_tok_s": 120, "power_w": 35}
                },
            }
        ],
    }
    path.write_text(yaml.safe_dump(fleet))
    return path


def migrated_settings(
    tmp_path: Path,
    database_url: str,
    broker_url: str,
    weights: Path,
    *,
    max_shard_requests: int,
    lease_s: float,
    heartbeat_s: float,
    pool_engine: dict[str, Any] | None = None,
) -> Settings:
    """Migrate ``database_url``, then settings with data and fleet (``write_fleet``) under ``tmp_path``."""
    engine = make_engine(database_url)
    upgrade(engine)
    engine.dispose()
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        broker_url=broker_url,
        fleet=write_fleet(tmp_path / "fleet.yaml", weights, pool_engine),
        max_shard_requests=max_shard_requests,
        lease_s=lease_s,
        heartbeat_s=heartbeat_s,
    )


@contextmanager
def api_server(settings: Settings) -> Iterator[str]:
    """The real API under uvicorn on a free 127.0.0.1 port (thread), stopped after."""
    import uvicorn

    from scheduler.api.app import create_app

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 20, "the API to start")
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)


def worker_env(settings: Settings) -> dict[str, str]:
    """Environment for a ``gridshift worker`` subprocess sharing the test's settings."""
    env = dict(os.environ)
    env.update(
        GRIDSHIFT_DATABASE_URL=settings.database_url,
        GRIDSHIFT_BROKER_URL=settings.broker_url,
        GRIDSHIFT_FLEET=str(settings.fleet),
        GRIDSHIFT_DATA_DIR=str(settings.data_dir),
        GRIDSHIFT_LEASE_S=str(settings.lease_s),
        GRIDSHIFT_HEARTBEAT_S=str(settings.heartbeat_s),
        HF_HUB_OFFLINE="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
    )
    return env


def start_worker(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``gridshift worker --site e2e-site --pool cpu`` and wait until Celery says ready."""
    exe = Path(sys.executable).parent / "gridshift"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [str(exe), "worker", "--site", SITE, "--pool", POOL, "--loglevel", "INFO"],
        env=worker_env(settings),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait_for(
        lambda: b" ready." in log_path.read_bytes() or proc.poll() is not None,
        60,
        f"the worker to start (log: {log_path})",
    )
    if proc.poll() is not None:
        raise RuntimeError(f"worker exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
    return proc


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    """Stop a worker we started (by its pid): SIGTERM, then SIGKILL after 10 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def wait_for(
    predicate: Callable[[], Any], timeout_s: float, what: str, *, every_s: float = 0.2
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after the timeout."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def chat_line(
    custom_id: str, content: str = "Summarise: the grid is clean at night.", max_tokens: int = 8
) -> dict[str, Any]:
    """One chat request line for ``tiny-chat``."""
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": "tiny-chat",
            "messages": [{"role": "user", "content": content}],
            "max_tokens": max_tokens,
        },
    }


def submit_batch(client: Any, lines: list[dict[str, Any]]) -> Any:
    """Upload ``lines`` as ``in.jsonl`` with the OpenAI ``client``; create a 24h chat batch of it."""
    content = "".join(json.dumps(x) + "\n" for x in lines).encode()
    uploaded = client.files.create(file=("in.jsonl", content), purpose="batch")
    return client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )


def plan_and_send_all(
    sessions: sessionmaker[Session], settings: Settings, send: Any, fleet: Fleet, batch_id: str
) -> tuple[TickReport, TickReport]:
    """Tick now (plans), then tick at the batch's last planned slot so every shard is sent.

    The planning tick already sends the shards the plan put in the slot in progress; the second
    sends the later ones. Which tick sends a shard depends on the plan (and so on the clock):
    checked here is that every shard of the batch is sent exactly once by the two together.

    Returns:
        The planning tick's report and the sending tick's (no replan), in that order.
    """
    now = now_utc()
    planned = tick(sessions, settings, now, send, fleet=fleet)
    with sessions() as s:
        shards = dict(
            s.execute(select(Shard.id, Shard.slot_start).where(Shard.batch_id == batch_id)).all()
        )
    assert shards, f"the planning tick planned no shard of {batch_id}"
    sent = tick(
        sessions, settings, max(now, *shards.values()), send, fleet=fleet, allow_replan=False
    )
    queued = planned.queued + sent.queued
    assert sorted(queued) == sorted(shards), (planned.queued, sent.queued, shards)
    in_progress = slot_floor(now, fleet.slot_minutes)
    assert sorted(planned.queued) == sorted(k for k, t in shards.items() if t <= in_progress)
    return planned, sent
