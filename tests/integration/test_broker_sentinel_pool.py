"""The broker sentinel returns its database connections (embedded broker on PostgreSQL).

kombu's SQLAlchemy channel never closes its session; the sentinel's ``qsize`` left it in a
transaction holding a pooled connection, once per tick, until the garbage collector ran: the
dispatcher hit ``QueuePool limit of size 5 overflow 10 reached`` tick after tick.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import psycopg
import pytest
from kombu.transport.sqlalchemy import Channel

from scheduler.config import Settings
from scheduler.dispatch.send import broker_url, celery_client, celery_sender

pytestmark = pytest.mark.integration


@pytest.fixture
def no_gc() -> Iterator[None]:
    """No garbage collection: a connection comes back only if the code returns it."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


def _terminate_all(url: str) -> int:
    db = url.rsplit("/", 1)[1]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (db,),
        ).fetchall()
    return len(rows)


def test_sentinel_checks_return_every_connection_through_database_terminations(
    fresh_pg_url: str, no_gc: None
) -> None:
    settings = Settings(database_url=fresh_pg_url)
    app = celery_client(settings)
    app.conf.broker_transport_options = {"pool_timeout": 2}  # a leak fails fast, not in 30 s
    sender = celery_sender(app)
    answers, failures = [], 0
    for i in range(40):  # more checks than the pool's 5 + 10 connections
        if i in (10, 20):
            assert _terminate_all(fresh_pg_url) > 0  # a database blip mid-way
        try:
            answers.append(sender.lost_messages())
        except Exception:  # a connection the blip killed: the tick logs it and goes on
            failures += 1
    host = broker_url(settings).split("+", 1)[1]
    engine = next(e for h, (e, _) in Channel._engines.items() if h == host)
    assert engine.pool.checkedout() == 0, engine.pool.status()
    assert answers[0] is True and not any(answers[1:])  # the sentinel stays put
    assert failures <= 4 and answers[-10:] == [False] * 10
