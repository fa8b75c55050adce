"""The planner survives its database, and two planners never both write (real PostgreSQL).

Backends are terminated with ``pg_terminate_backend`` from an admin connection, as a database
failover or an operator would: the planner must keep retrying (lock acquisition included),
stop planning the moment its lock's connection ends, and a dispatcher's supervisor must keep
its planner thread alive.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from execution_helpers import T0, Harness, chat_line, make_harness
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import Settings
from scheduler.dispatch.exporter import DispatchState, dispatcher_registry, start_exporter
from scheduler.dispatch.planner_lock import PlannerFenced, PlannerLock, set_fence
from scheduler.dispatch.planner_loop import PlannerLoop
from scheduler.dispatch.planner_supervisor import PlannerSupervisor
from scheduler.dispatch.replan import replan
from scheduler.store.db import make_engine, session_factory
from scheduler.store.migrate import upgrade
from scheduler.store.tables import PlanRecord, Shard

pytestmark = pytest.mark.integration


@pytest.fixture
def pg(fresh_pg_url: str) -> Iterator[tuple[str, Engine]]:
    engine = make_engine(fresh_pg_url)
    upgrade(engine)
    yield fresh_pg_url, engine
    engine.dispose()


def _harness(url: str, engine: Engine, tmp_path: Path) -> Harness:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=url,
        planner_debounce_s=0.0,
        planner_poll_s=0.2,
        planner_retry_s=0.5,
        planner_full_subprocess=False,
    )
    return make_harness(settings, session_factory(engine), tmp_path)


def _loop(h: Harness, factory: sessionmaker[Session] | None = None) -> PlannerLoop:
    return PlannerLoop(
        factory or h.sessions, h.settings, h.fleet, signals_for=h.signals_for, clock=lambda: T0
    )


def _terminate(url: str, pids: str = "all") -> int:
    """Terminate the test database's backends (``all``) or one backend; how many."""
    db = url.rsplit("/", 1)[1]
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        if pids == "all":
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (db,),
            ).fetchall()
        else:
            rows = conn.execute("SELECT pg_terminate_backend(%s)", (int(pids),)).fetchall()
    return sum(1 for (ok,) in rows if ok)


def _planned(h: Harness, batch_id: str) -> bool:
    """Whether the batch has shards (False while the test's own query is terminated too)."""
    try:
        with h.sessions() as s:
            return bool(s.scalar(select(func.count()).where(Shard.batch_id == batch_id)))
    except OperationalError:
        return False


def _wait(cond: object, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def test_a_dispatcher_started_during_backend_terminations_plans_a_new_batch_within_60_s(
    pg: tuple[str, Engine], tmp_path: Path
) -> None:
    url, engine = pg
    h = _harness(url, engine, tmp_path)
    batch = h.submit([chat_line(f"r{i}") for i in range(4)], tmp=tmp_path)
    # Given 8 s of backend terminations (every 0.1 s), and the dispatcher's planner started 1 s in
    stopping, killed = threading.Event(), [0]

    def terminator() -> None:
        end = time.monotonic() + 8.0
        while time.monotonic() < end and not stopping.is_set():
            killed[0] += _terminate(url)
            time.sleep(0.1)

    blip = threading.Thread(target=terminator, daemon=True)
    blip.start()
    time.sleep(1.0)
    started = time.monotonic()
    supervisor = PlannerSupervisor(
        h.sessions, h.settings, h.fleet, signals_for=h.signals_for, clock=lambda: T0
    ).start()
    try:
        # When the dispatcher ticks (each tick makes sure the planner thread lives)
        planned = False
        while time.monotonic() - started < 60 and not planned:
            supervisor.ensure_alive()
            planned = _planned(h, batch)
            time.sleep(0.5)
        took = time.monotonic() - started
        blip.join()
        health = supervisor.health()
    finally:
        stopping.set()
        supervisor.stop()
    # Then the batch is planned within 60 s, the blip really hit, and the planner is up
    assert planned, f"not planned after {took:.0f} s: {supervisor.health()}"
    assert killed[0] > 0
    state = supervisor.loop.state
    assert state.last_error is not None or state.lock_losses, "the blip never reached the planner"
    assert health["alive"] and health["up"] and health["holding_lock"], health
    assert not supervisor.alive()  # stopped when asked, not restarted


def test_a_planner_that_loses_its_lock_connection_stops_and_only_the_new_one_writes(
    pg: tuple[str, Engine], tmp_path: Path
) -> None:
    url, engine = pg
    h = _harness(url, engine, tmp_path)
    first = h.submit([chat_line("a0")], tmp=tmp_path)
    # Given planner A running and holding the lock, having planned the first batch
    a_lock = PlannerLock(engine)
    a, a_stop = _loop(h), threading.Event()
    a_thread = threading.Thread(target=a.run, args=(a_stop, a_lock), daemon=True)
    a_thread.start()
    b_engine = make_engine(url)
    b, b_stop = _loop(h, session_factory(b_engine)), threading.Event()
    b_thread = threading.Thread(target=b.run, args=(b_stop, PlannerLock(b_engine)), daemon=True)
    try:
        assert _wait(lambda: _planned(h, first), 30), a.state
        dead_pid = a_lock.backend_pid
        assert dead_pid is not None and a.state.holding
        a_plans = list(a.state.plans)
        # When A's lock backend is terminated (the server releases the lock) and B starts
        assert _terminate(url, str(dead_pid)) == 1
        b_thread.start()
        assert _wait(lambda: b.state.holding, 30), b.state
        # Then a new batch is planned by B only; A stopped planning at once
        second = h.submit([chat_line("b0")], tmp=tmp_path)
        assert _wait(lambda: _planned(h, second), 30), b.state
        time.sleep(1.0)  # A has had several polls to (wrongly) plan
        assert a.state.plans == a_plans
        assert b.state.plans
        assert a.state.lock_losses == 1 and not a.state.holding
        assert a.state.status == "standby"
        # And a write carrying A's old fence is refused inside the transaction itself
        third = h.submit([chat_line("c0")], tmp=tmp_path)
        with h.sessions() as s:
            plans_before = s.scalar(select(func.count()).select_from(PlanRecord))
        set_fence(dead_pid)
        try:
            with pytest.raises(PlannerFenced):
                replan(
                    h.sessions,
                    h.settings,
                    h.fleet,
                    T0,
                    trigger="slot_boundary",
                    signals_for=h.signals_for,
                )
        finally:
            set_fence(None)
        with h.sessions() as s:
            assert s.scalar(select(func.count()).select_from(PlanRecord)) == plans_before
        assert _wait(lambda: _planned(h, third), 30)  # B plans it
        assert a.state.plans == a_plans
    finally:
        a_stop.set()
        b_stop.set()
        a_thread.join(30)
        if b_thread.ident is not None:
            b_thread.join(30)
        b_engine.dispose()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_the_supervisor_restarts_a_planner_thread_that_ended(
    pg: tuple[str, Engine], tmp_path: Path
) -> None:
    url, engine = pg
    h = _harness(url, engine, tmp_path)
    supervisor = PlannerSupervisor(
        h.sessions, h.settings, h.fleet, signals_for=h.signals_for, clock=lambda: T0
    )
    calls = [0]
    real_run = supervisor.loop.run

    def dies_once(stop: threading.Event, lock: PlannerLock | None = None) -> None:
        calls[0] += 1
        if calls[0] == 1:
            raise SystemExit("the planner thread ended")  # what no retry inside the loop sees
        real_run(stop, lock)

    supervisor.loop.run = dies_once  # type: ignore[method-assign]
    supervisor.start()
    try:
        assert _wait(lambda: not supervisor.alive(), 10)
        assert supervisor.health()["status"] == "dead" and not supervisor.health()["up"]
        assert supervisor.ensure_alive()
        batch = h.submit([chat_line("r0")], tmp=tmp_path)
        assert _wait(lambda: _planned(h, batch), 30)
        health = supervisor.health()
        assert health["restarts"] == 1 and health["up"], health
        assert not supervisor.ensure_alive()  # alive: nothing to do
        # And the dispatcher's exporter shows it: /healthz detail and the planner families
        state = DispatchState(planner=supervisor.health)
        server = start_exporter(
            dispatcher_registry(None, state), state, host="127.0.0.1", port=0, stale_after_s=60
        )
        url = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            state.record()
            body = json.loads(urllib.request.urlopen(f"{url}/healthz", timeout=5).read())
            scraped = urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()
        finally:
            server.shutdown()
            server.server_close()
        assert body["planner"]["status"] == "planning" and body["planner"]["restarts"] == 1
        assert "gridshift_planner_up 1.0" in scraped
        assert "gridshift_planner_restarts_total 1.0" in scraped
        assert "gridshift_planner_lock_held 1.0" in scraped
    finally:
        supervisor.stop()
