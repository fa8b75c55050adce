"""``gridshift demo``: the whole flow in one process with no server installed, in compressed time."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from scheduler.config import Settings
from scheduler.dispatch.tick import tick
from scheduler.domain import Fleet, SlotSignal
from scheduler.store.tables import Batch, Shard, now_utc
from workers.engines.tiny_model import SAMPLE_CONTEXT

log = logging.getLogger(__name__)

Echo = Callable[[str], None]
JOBS_DIR = Path(__file__).resolve().parents[1] / "jobs"


class SimClock:
    """A clock running at wall-clock speed from a chosen start (the demo jumps it to slots)."""

    def __init__(self, start: datetime) -> None:
        """Start at ``start``."""
        self.jump(start)

    def jump(self, to: datetime) -> None:
        """Continue from ``to``."""
        self._base, self._t0 = to, time.monotonic()

    def __call__(self) -> datetime:
        """The simulated now."""
        return self._base + timedelta(seconds=time.monotonic() - self._t0)


def _serve_api(settings: Settings, port: int = 0) -> tuple[str, Any, threading.Thread]:
    """Start the real API with uvicorn on 127.0.0.1 in a thread (``port`` 0: a free port)."""
    import uvicorn

    from scheduler.api.app import create_app

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server, thread


def _collect(
    settings: Settings, fleet: Fleet, sessions: Any, now: datetime, online: bool
) -> Mapping[tuple[str, datetime], SlotSignal]:
    """Horizon signals once: live where reachable (short timeout), SYNTHETIC otherwise."""
    from scheduler.dispatch.slots import slots_between
    from scheduler.forecasts.cache import SqlForecastCache
    from scheduler.forecasts.service import collect_signals
    from scheduler.forecasts.synthetic import synthetic_signals

    slots = slots_between(now, now + timedelta(hours=settings.horizon_hours), fleet.slot_minutes)
    if online:
        try:
            return collect_signals(
                fleet, slots, cache=SqlForecastCache(sessions), settings=settings, now=now
            ).signals
        except Exception as e:  # any provider trouble: the demo still runs on synthetic shapes
            log.warning("live signals unavailable (%s); using SYNTHETIC signals", e)
    sig = synthetic_signals(fleet, slots[0], settings.horizon_hours + 1)
    return {k: v for k, v in sig.items() if k[1] in set(slots)}


DEMO_PROVIDER = "demo"
#: The demo's tiny model context, in tokens: the sample fleet's (``tiny_model.SAMPLE_CONTEXT``,
#: its models' ``context_tokens``). Its 512-token BPE reads about 1.5 characters per token, so
#: the ``doc-embeddings`` job's documents (up to ~400 characters, about 275 tokens) need more
#: than the builder's default 256; RoPE has no learned positions, so this costs no weights.
DEMO_CONTEXT = SAMPLE_CONTEXT
#: The sample fleet's slot length (hourly), for "has this slot ended".
SLOT = timedelta(hours=1)


def cache_signals(
    sessions: Any,
    signals: Mapping[tuple[str, datetime], SlotSignal],
    now: datetime,
    kind: str = "forecast",
) -> int:
    """Store the signals the demo planned on in ``forecast_points`` (for the dashboard's curves).

    One point per site, slot and signal (``carbon``, ``price``, ``solar``), keyed by the site
    name under provider ``demo``: whatever they came from (live, SYNTHETIC or a fallback),
    these are the values the plan used (``kind="forecast"``), or the scripted night's actuals
    (``kind="actual"``), kept apart from real providers' caches.

    Returns:
        How many points were written.
    """
    from scheduler.forecasts.base import CARBON, PRICE, SOLAR
    from scheduler.forecasts.cache import SqlForecastCache

    cache = SqlForecastCache(sessions)
    per_series: dict[tuple[str, str], dict[datetime, float]] = {}
    for (site, slot), sig in signals.items():
        for name, value in (
            (CARBON, sig.carbon_g_per_kwh),
            (PRICE, sig.price_per_kwh),
            (SOLAR, sig.renewable_kw),
        ):
            per_series.setdefault((site, name), {})[slot] = value
    return sum(
        cache.upsert(DEMO_PROVIDER, site, signal, kind, values, now)
        for (site, signal), values in sorted(per_series.items())
    )


STORE_NAME = "gridshift.db"
DEMO_MARKER = "DEMO-STORE"


def _store_has_batches(db_path: Path) -> bool:
    """Whether the SQLite store at ``db_path`` holds any batch (read-only; False without schema)."""
    import sqlite3

    try:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    except sqlite3.Error:
        return False
    try:
        return bool(conn.execute("SELECT EXISTS (SELECT 1 FROM batches)").fetchone()[0])
    except sqlite3.Error:
        return False
    finally:
        conn.close()


def reset_demo_store(root: Path) -> Path:
    """Start the demo's store afresh in ``root`` and return its database file.

    The demo writes the data dir's own store (``gridshift.db``), the one ``gridshift schedule``,
    ``report``, ``serve`` and the dashboard read with no flag. It replaces only a store it made
    itself (marked by ``DEMO-STORE``) or one without batches.

    Raises:
        ConfigError: ``root`` holds a store with batches the demo did not make.
    """
    from scheduler.errors import ConfigError

    db_path = root / STORE_NAME
    marker = root / DEMO_MARKER
    if db_path.exists() and not marker.exists() and _store_has_batches(db_path):
        raise ConfigError(
            f"{db_path} holds a gridshift store with batches that the demo did not make; the "
            "demo leaves it alone: run it in another directory with `gridshift demo --data-dir "
            "DIR` (then GRIDSHIFT_DATA_DIR=DIR for the other commands)"
        )
    for name in (STORE_NAME, f"{STORE_NAME}-wal", f"{STORE_NAME}-shm", "demo.db", "demo.db-wal"):
        (root / name).unlink(missing_ok=True)
    shutil.rmtree(root / "files", ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    marker.write_text(
        "This store was made by `gridshift demo`; the next demo run replaces it.\n",
        encoding="utf-8",
    )
    return db_path


def _night_signals(
    settings: Settings, fleet: Fleet, sessions: Any, evening: datetime, online: bool
) -> tuple[Mapping[tuple[str, datetime], SlotSignal], Mapping[tuple[str, datetime], SlotSignal]]:
    """The replayed night's (forecast the plan uses, actuals the ledger books).

    Offline: the scripted SYNTHETIC night is the actuals and the plan's forecast is that night
    with a seeded SYNTHETIC carbon forecast error (``demo_night.forecast_of``). Online: the
    providers' signals, used as both (no actuals are known in advance).
    """
    from workers.demo_night import forecast_of, night_signals

    if online:
        live = _collect(settings, fleet, sessions, evening, online)
        return live, live
    actuals = night_signals(fleet, evening, settings.horizon_hours + 2)
    return forecast_of(actuals, evening), actuals


def run_demo(
    base: Settings,
    *,
    data_dir: Path | None = None,
    job_paths: Sequence[Path] | None = None,
    online: bool = False,
    serve: bool = False,
    echo: Echo = print,
) -> int:
    """Replay a night: submit nightly jobs through the API, plan, run, print plan beside booked.

    By default every job spec in ``jobs/`` is submitted at 18:00 UTC of the latest night wholly
    in the past (``demo_night.story_evening``), on that night's SYNTHETIC signals.

    Time is compressed: the store's clock is replaced by a simulated one (``replay_clock``)
    that starts at the evening and jumps to each planned slot in turn; the real dispatcher
    ticks there and the shards it sends run in this process (``run_shard``, the same code a
    Celery worker runs), each booked with the signals of its planned slot.

    With ``serve`` the API and the dashboard stay up on the demo's store until interrupted.

    Returns:
        0 when every batch completed, 1 otherwise.

    Raises:
        ConfigError: the data dir holds a store the demo did not make.
    """
    from scheduler.samples import load_sample_fleet
    from scheduler.store.tables import replay_clock
    from scheduler.store.tenants import create_api_key
    from workers.demo_night import (
        STORY_SPAN,
        actuals_lookup,
        forecast_error_note,
        story_evening,
    )
    from workers.demo_report import (
        planned_benefit,
        print_outcome,
        print_plan,
        print_realised,
    )
    from workers.engines.tiny_model import build_tiny_model

    t_start = time.monotonic()
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    root = (data_dir or base.data_dir).resolve()
    settings, sessions = _open_store(base, root, echo)
    fleet = load_sample_fleet()
    weights = build_tiny_model(root / "models" / "tiny-chat", max_position_embeddings=DEMO_CONTEXT)
    echo(
        f"model: a tiny random-weight Llama built at {weights} ({DEMO_CONTEXT}-token context) "
        "serves every model of the sample fleet (outputs are gibberish; token counts and "
        "timings are real)"
    )

    real_now = now_utc()
    evening = story_evening(real_now)
    clock = SimClock(evening)
    with replay_clock(clock):
        signals, actuals = _night_signals(settings, fleet, sessions, evening, online)
        cache_signals(sessions, signals, evening)
        if actuals is not signals:  # the night is past: its actuals are known, up to now
            known = {k: v for k, v in actuals.items() if k[1] + SLOT <= real_now}
            cache_signals(sessions, known, evening + STORY_SPAN, kind="actual")
        sources = sorted({s.source for s in signals.values()})
        echo(
            f"night: jobs submitted {evening:%a %d %b %H:%M} UTC, the evening peak; signals "
            f"{', '.join(sources)} (synthetic = generated shapes, labelled as such: London "
            "windy at night, Frankfurt coal and gas, Madrid solar at midday)"
        )
        with sessions() as s, s.begin():
            key = create_api_key(s, "demo", admin=True)  # the operator sees the whole fleet
        url, server, thread = _serve_api(settings, _serve_port(base) if serve else 0)
        jobs = _submit_jobs(url, key, job_paths or sorted(JOBS_DIR.glob("*.yaml")), clock)
        echo(f"submitted {len(jobs)} nightly jobs through the API at {url}")
        shards_run, plan_id = _run_night(
            settings, fleet, sessions, signals, actuals, weights, clock
        )
        print_plan(echo, sessions, jobs, plan_id, evening, signals)
    code = print_outcome(
        echo,
        sessions,
        jobs,
        plan_id,
        shards_run,
        time.monotonic() - t_start,
        forecast_note=forecast_error_note(signals, actuals),
    )
    print_realised(
        echo,
        sessions,
        jobs,
        fleet,
        actuals_lookup(actuals),
        planned_benefit(sessions, plan_id),
    )
    if serve:
        _keep_serving(echo, server, thread, url, key, root, evening)
    else:
        server.should_exit = True
        thread.join(timeout=10)
        echo(
            f"next: `gridshift schedule`, `gridshift report` (they read {root}); "
            "`gridshift demo --serve` keeps the API and the dashboard up on this night"
        )
    return code


def _open_store(base: Settings, root: Path, echo: Echo) -> tuple[Settings, Any]:
    """A fresh demo store in ``root`` (SQLite, migrated) and the demo's settings on it."""
    from scheduler.store.db import make_engine, session_factory
    from scheduler.store.migrate import upgrade

    db_path = reset_demo_store(root)
    settings = base.model_copy(
        update={
            "data_dir": root,
            "database_url": "",
            "broker_url": "",
            "fleet": None,
            "http_timeout_s": min(base.http_timeout_s, 3.0),
        }
    )
    engine = make_engine(settings.resolved_database_url)
    upgrade(engine)
    echo(f"gridshift demo: store {db_path} (SQLite, no server; broker and worker in-process)")
    if base.database_url and base.database_url != settings.resolved_database_url:
        echo(
            "  note: GRIDSHIFT_DATABASE_URL is set, so `gridshift schedule` and `report` read "
            f"that store, not this one; unset it or set it to sqlite:///{db_path}"
        )
    return settings, session_factory(engine)


def _submit_jobs(
    url: str, key: str, spec_paths: Sequence[Path], now: Callable[[], datetime]
) -> dict[str, str]:
    """Upload each job spec's batch file and create its batch through the API at ``now``
    (simulated); batch id -> job name, in submission order."""
    from scheduler.client import GridshiftClient
    from scheduler.jobs import build_batch_file, create_options, load_job

    jobs: dict[str, str] = {}
    with GridshiftClient(url, key) as client:
        for spec_path in spec_paths:
            job = load_job(spec_path)
            batch_file = build_batch_file(job, spec_path.parent)
            uploaded = client.upload_file(f"{job.name}.jsonl", batch_file.content)
            batch = client.create_batch(
                uploaded["id"], endpoint=job.endpoint, options=create_options(job, now())
            )
            jobs[batch["id"]] = job.name
    return jobs


def _run_night(
    settings: Settings,
    fleet: Fleet,
    sessions: Any,
    signals: Mapping[tuple[str, datetime], SlotSignal],
    actuals: Mapping[tuple[str, datetime], SlotSignal],
    weights: Path,
    clock: SimClock,
) -> tuple[int, int | None]:
    """Plan at the evening, then run every planned slot in turn; (shards run, plan id).

    The plan sees ``signals`` (the forecast); each shard is booked with ``actuals``.
    """
    from workers.engine_cache import EngineCache
    from workers.runtime import WorkerRuntime

    def signals_for(
        _f: Fleet, slots: tuple[datetime, ...], _n: datetime
    ) -> Mapping[tuple[str, datetime], SlotSignal]:
        wanted = set(slots)
        return {k: v for k, v in signals.items() if k[1] in wanted}

    cache = EngineCache(weights_override={m.name: str(weights) for m in fleet.models})
    runtime = WorkerRuntime(settings=settings, fleet=fleet, sessions=sessions, engine_cache=cache)
    from workers.demo_night import actuals_lookup

    runtime.signal_lookup = actuals_lookup(actuals)
    queue: list[str] = []

    def send(_name: str, *args: Any, queue: str) -> None:
        pending.append(str(args[0]))  # the in-process broker: one list, run in send order

    pending = queue
    report = tick(sessions, settings, clock(), send, fleet=fleet, signals_for=signals_for)
    shards_run = 0
    for _ in range(10_000):
        for shard_id in list(queue):
            queue.remove(shard_id)
            runtime.run(shard_id, clock=clock)
            shards_run += 1
        with sessions() as s:
            open_batches = s.scalar(
                select(func.count())
                .select_from(Batch)
                .where(Batch.status.in_(("validating", "in_progress", "finalizing")))
            )
            nxt = s.scalar(select(func.min(Shard.slot_start)).where(Shard.status == "planned"))
        if not open_batches or nxt is None:
            break
        clock.jump(max(clock(), nxt))
        tick(
            sessions,
            settings,
            clock(),
            send,
            fleet=fleet,
            signals_for=signals_for,
            allow_replan=False,
        )
    return shards_run, report.plan_id


def _serve_port(settings: Settings) -> int:
    """The port of GRIDSHIFT_API_URL when it is local and free (so the CLI needs no flag), else 0."""
    from urllib.parse import urlsplit

    parts = urlsplit(settings.api_url)
    if parts.hostname not in ("127.0.0.1", "localhost") or not parts.port:
        return 0
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", parts.port))
        except OSError:
            return 0
    return parts.port


def _keep_serving(
    echo: Echo,
    server: Any,
    thread: threading.Thread,
    url: str,
    key: str,
    root: Path,
    evening: datetime,
) -> None:
    """Keep the demo's API up until Ctrl-C, saying how to reach it."""
    night = (
        f"from={(evening - timedelta(hours=2)):%Y-%m-%dT%H:%MZ}"
        f"&to={(evening + timedelta(hours=22)):%Y-%m-%dT%H:%MZ}"
    )
    echo(f"\nthe API and the dashboard are up on this night: {url}/dashboard?{night}")
    echo(f"  sign in with the demo's admin key: {key}")
    echo(f"  export GRIDSHIFT_API_URL={url} GRIDSHIFT_API_KEY={key}")
    echo(f"  then `gridshift batches list`; `gridshift schedule` and `report` read {root}")
    echo("  Ctrl-C stops the server")
    try:
        while thread.is_alive():
            thread.join(timeout=0.5)
    except KeyboardInterrupt:
        server.should_exit = True
        thread.join(timeout=10)
