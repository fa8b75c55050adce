"""Recovery from broker faults with a real Redis that is really restarted (no persistence).

A restart that loses queued messages delays work by at most two ticks: the dispatcher's sentinel
message is gone too, so the next tick re-sends every queued shard. A tick whose sends fail
(broker down) puts the unsent shards back to due instead of leaving them queued with no message.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import Settings
from scheduler.dispatch.send import CelerySender, celery_client, celery_sender
from scheduler.dispatch.tick import TickReport, tick
from scheduler.domain import ShardStatus
from scheduler.store.tables import Shard
from tests.conftest import unavailable
from tests.integration.api_harness import free_port
from tests.unit.execution_helpers import T0, Harness, chat_line, make_harness

pytestmark = pytest.mark.integration


class RedisServer:
    """A private ``redis-server`` on a free port, without persistence, that can be restarted."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
            + ["--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def llen(self, queue: str) -> int:
        return int(redis.Redis(port=self.port).llen(queue))


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        unavailable("redis-server (apt-get install redis-server)")
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _harness(tmp_path: Path, sessions: sessionmaker[Session], broker: str) -> Harness:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'gs.db'}",
        broker_url=broker,
        tick_s=15.0,
    )
    h = make_harness(settings, sessions, tmp_path / "no-weights")
    h.submit([chat_line(f"r{i}") for i in range(4)], tmp=tmp_path)
    h.tick(T0)  # plans; nothing is due before its slot
    return h


def _first_slot(h: Harness) -> datetime:
    with h.sessions() as s:
        first = s.scalar(select(func.min(Shard.slot_start)))
    assert first is not None
    return max(first, T0)


def _queued(h: Harness) -> dict[str, str]:
    with h.sessions() as s:
        rows = s.execute(
            select(Shard.id, Shard.site, Shard.pool).where(Shard.status == ShardStatus.QUEUED.value)
        )
        return {sid: f"{site}.{pool}" for sid, site, pool in rows}


def _messages(server: RedisServer, queues: set[str]) -> int:
    return sum(server.llen(q) for q in queues)


def _tick(h: Harness, sender: CelerySender, now: datetime) -> TickReport:
    """One dispatcher tick with the real Celery sender, without re-planning."""
    return tick(
        h.sessions,
        h.settings,
        now,
        sender,
        fleet=h.fleet,
        signals_for=h.signals_for,
        allow_replan=False,
    )


def test_a_broker_restart_that_loses_messages_delays_work_by_at_most_two_ticks(
    tmp_path: Path, sessions: sessionmaker[Session], redis_server: RedisServer
) -> None:
    h = _harness(tmp_path, sessions, redis_server.url)
    sender = celery_sender(celery_client(h.settings))

    def run_tick(now: datetime) -> TickReport:
        return _tick(h, sender, now)

    # Given due shards sent to Redis
    now = _first_slot(h)
    first = run_tick(now)
    queued = _queued(h)
    assert first.queued and set(first.queued) <= set(queued)
    assert _messages(redis_server, set(queued.values())) == len(queued)
    # and a tick with nothing new (the sentinel is in place: nothing is re-sent)
    now += timedelta(seconds=h.settings.tick_s)
    assert run_tick(now).resent_stale == []
    # When Redis restarts and loses every queued message
    redis_server.stop()
    redis_server.start()
    assert _messages(redis_server, set(queued.values())) == 0
    # Then within two ticks every queued shard has a message again
    recovered = False
    for _ in range(2):
        now += timedelta(seconds=h.settings.tick_s)
        report = run_tick(now)
        if _messages(redis_server, set(queued.values())) >= len(queued):
            recovered = True
            break
    assert recovered, "queued shards were not re-sent within two ticks of the broker restart"
    assert report.broker_lost and set(report.resent_stale) == set(queued)
    # and the next tick does not send them again (the sentinel is back)
    now += timedelta(seconds=h.settings.tick_s)
    assert run_tick(now).resent_stale == []


def test_a_tick_whose_sends_fail_puts_the_shards_back_to_due(
    tmp_path: Path, sessions: sessionmaker[Session], redis_server: RedisServer
) -> None:
    h = _harness(tmp_path, sessions, redis_server.url)
    sender = celery_sender(celery_client(h.settings))
    now = _first_slot(h)
    # Given the broker is down when shards fall due
    redis_server.stop()
    report = _tick(h, sender, now)
    # Then the tick does not fail, sends nothing, and leaves no shard queued without a message
    assert report.queued == [] and report.unsent
    assert _queued(h) == {}
    # When the broker is back, the next tick sends them
    redis_server.start()
    now += timedelta(seconds=h.settings.tick_s)
    again = _tick(h, sender, now)
    assert set(again.queued) == set(report.unsent)
    queued = _queued(h)
    assert _messages(redis_server, set(queued.values())) == len(queued) > 0
