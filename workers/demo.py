"""``gridshift demo``: the whole flow in one process with no server installed, in compressed time."""

from __future__ import annotations

import logging
import os
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
from scheduler.store.tables import AssignmentRecord, Batch, PlanRecord, Shard, now_utc

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


def _serve_api(settings: Settings) -> tuple[str, Any, threading.Thread]:
    """Start the real API with uvicorn on a free 127.0.0.1 port in a thread."""
    import uvicorn

    from scheduler.api.app import create_app

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
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


def cache_signals(
    sessions: Any, signals: Mapping[tuple[str, datetime], SlotSignal], now: datetime
) -> int:
    """Store the signals the demo planned on in ``forecast_points`` (for the dashboard's curves).

    One forecast point per site, slot and signal (``carbon``, ``price``, ``solar``), keyed by
    the site name under provider ``demo``: whatever they came from (live, SYNTHETIC or a
    fallback), these are the values the plan used, kept apart from real providers' caches.

    Returns:
        How many points were written.
    """
    from scheduler.forecasts.base import CARBON, FORECAST, PRICE, SOLAR
    from scheduler.forecasts.cache import SqlForecastCache

    cache = SqlForecastCache(sessions)
    per_series: dict[tuple[str, str], dict[datetime, float]] = {}
    for (site, slot), sig in signals.items():
        for kind, value in (
            (CARBON, sig.carbon_g_per_kwh),
            (PRICE, sig.price_per_kwh),
            (SOLAR, sig.renewable_kw),
        ):
            per_series.setdefault((site, kind), {})[slot] = value
    return sum(
        cache.upsert(DEMO_PROVIDER, site, kind, FORECAST, values, now)
        for (site, kind), values in sorted(per_series.items())
    )


def run_demo(
    base: Settings,
    *,
    data_dir: Path | None = None,
    job_paths: Sequence[Path] | None = None,
    online: bool = True,
    echo: Echo = print,
) -> int:
    """Submit nightly jobs through the API, plan them, run them, print schedule, savings, ledger.

    By default every job spec in ``jobs/`` is submitted, so the plan has work with different
    windows to shift across the sample sites and hours.

    Time is compressed: after planning at the real time, the demo jumps a simulated clock to
    each planned slot in turn, ticks the real dispatcher there, and runs the shards it sends in
    this process (``run_shard``, the same code a Celery worker runs), so each is booked with the
    signals of its planned slot. Nothing waits for wall-clock hours.

    Returns:
        0 when every batch completed, 1 otherwise.
    """
    from scheduler.client import GridshiftClient
    from scheduler.jobs import build_batch_file, create_options, load_job
    from scheduler.samples import load_sample_fleet
    from scheduler.store.db import make_engine, session_factory
    from scheduler.store.migrate import upgrade
    from scheduler.store.tenants import create_api_key
    from workers.engine_cache import EngineCache
    from workers.engines.tiny_model import build_tiny_model
    from workers.runtime import WorkerRuntime

    t_start = time.monotonic()
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    root = (data_dir or base.data_dir).resolve()
    db_path = root / "demo.db"
    for leftover in (db_path, root / "demo.db-wal", root / "demo.db-shm"):
        leftover.unlink(missing_ok=True)  # the demo's own database: a fresh run each time
    settings = base.model_copy(
        update={
            "data_dir": root,
            "database_url": f"sqlite:///{db_path}",
            "broker_url": "",
            "fleet": None,
            "http_timeout_s": min(base.http_timeout_s, 3.0),
        }
    )
    engine = make_engine(settings.resolved_database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    fleet = load_sample_fleet()
    echo(f"gridshift demo: data in {root} (SQLite, no server; broker and worker in-process)")
    weights = build_tiny_model(root / "models" / "tiny-chat")
    echo(
        f"model: tiny random-weight Llama built at {weights} (outputs are gibberish; token counts and timings are real)"
    )

    now = now_utc()
    signals = _collect(settings, fleet, sessions, now, online)
    cache_signals(sessions, signals, now)
    sources = sorted({s.source for s in signals.values()})
    echo(f"signals: {', '.join(sources)} (synthetic = generated shapes, labelled as such)")

    with sessions() as s, s.begin():
        key = create_api_key(s, "demo")
    url, server, thread = _serve_api(settings)
    batch_ids: list[str] = []
    with GridshiftClient(url, key) as client:
        for spec_path in job_paths or sorted(JOBS_DIR.glob("*.yaml")):
            job = load_job(spec_path)
            batch_file = build_batch_file(job, spec_path.parent)
            uploaded = client.upload_file(f"{job.name}.jsonl", batch_file.content)
            batch = client.create_batch(
                uploaded["id"], endpoint=job.endpoint, options=create_options(job, now)
            )
            echo(
                f"submitted job {job.name!r} through the API at {url}: batch {batch['id']}, {batch_file.requests} requests, status {batch['status']}"
            )
            batch_ids.append(batch["id"])

    def signals_for(
        _f: Fleet, slots: tuple[datetime, ...], _n: datetime
    ) -> Mapping[tuple[str, datetime], SlotSignal]:
        wanted = set(slots)
        return {k: v for k, v in signals.items() if k[1] in wanted}

    cache = EngineCache(weights_override={m.name: str(weights) for m in fleet.models})
    runtime = WorkerRuntime(settings=settings, fleet=fleet, sessions=sessions, engine_cache=cache)
    runtime.signal_lookup = lambda site, slot: (
        (signals[(site, slot)], signals[(site, slot)].source) if (site, slot) in signals else None
    )
    queue: list[str] = []

    def send(_name: str, *args: Any, queue: str) -> None:
        pending.append(str(args[0]))  # the in-process broker: one list, run in send order

    pending = queue
    report = tick(sessions, settings, now, send, fleet=fleet, signals_for=signals_for)
    _print_plan(echo, sessions, batch_ids, report.plan_id)
    clock = SimClock(now)
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
                .where(Batch.id.in_(batch_ids), Batch.status.in_(("in_progress", "finalizing")))
            )
            nxt = s.scalar(
                select(func.min(Shard.slot_start)).where(
                    Shard.batch_id.in_(batch_ids), Shard.status == "planned"
                )
            )
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
    server.should_exit = True
    thread.join(timeout=10)
    return _print_outcome(echo, sessions, batch_ids, shards_run, time.monotonic() - t_start)


def _print_plan(echo: Echo, sessions: Any, batch_ids: list[str], plan_id: int | None) -> None:
    with sessions() as s:
        plan = s.get(PlanRecord, plan_id) if plan_id else None
        rows = (
            s.scalars(
                select(AssignmentRecord)
                .where(
                    AssignmentRecord.plan_id == plan_id, AssignmentRecord.batch_id.in_(batch_ids)
                )
                .order_by(AssignmentRecord.slot_start, AssignmentRecord.site)
            ).all()
            if plan_id
            else []
        )
    if plan is None:
        echo("no plan was made (nothing to place)")
        return
    echo(
        f"\nplan {plan.id}: status {plan.status}, solved in {plan.solve_s:.2f} s, objectives {' > '.join(plan.objectives)}"
    )
    echo(
        f"  {'batch':<30} {'slot (UTC)':<17} {'site':<13} {'pool':<5} {'model':<15} {'requests':>8} {'gCO2/kWh':>9} {'planned CO2 g':>14}"
    )
    for a in rows:
        echo(
            f"  {a.batch_id:<30} {a.slot_start:%Y-%m-%d %H:%M} {a.site:<13} {a.pool:<5} {a.model:<15} {a.requests:>8} {a.carbon_g_per_kwh or 0:>9.0f} {a.co2_g:>14.4f}"
        )
    for u in plan.unplaced:
        echo(f"  unplaced: {u['batch']}: {u['reason']}")
    totals = plan.totals
    echo("\nsavings against the baselines (all figures ESTIMATED from the model profiles):")
    echo(f"  {'':<14} {'co2_g':>10} {'cost':>10} {'water_l':>10} {'delay_h':>9}")
    echo(
        f"  {'this plan':<14} {totals['co2_g']:>10.4f} {totals['cost']:>10.6f} {totals['water_l']:>10.5f} {totals['delay_h']:>9.2f}"
    )
    for name, b in plan.baselines.items():
        saved = 100.0 * (1 - totals["co2_g"] / b["co2_g"]) if b["co2_g"] else 0.0
        echo(
            f"  {name:<14} {b['co2_g']:>10.4f} {b['cost']:>10.6f} {b['water_l']:>10.5f} {b['delay_h']:>9.2f}   CO2 saved by the plan: {saved:.1f} %"
        )


def _print_outcome(
    echo: Echo, sessions: Any, batch_ids: list[str], shards_run: int, wall_s: float
) -> int:
    from scheduler.store.ledger import ledger_totals

    with sessions() as s:
        batches = [s.get(Batch, batch_id) for batch_id in batch_ids]
        t = ledger_totals(s, batch_id=batch_ids[0]) if len(batch_ids) == 1 else ledger_totals(s)
    label = "ESTIMATED (no energy counter on this machine)" if t.estimated else "measured"
    echo(f"\nran {shards_run} shard(s):")
    for batch in batches:
        assert batch is not None
        echo(
            f"  batch {batch.id} {batch.status}: {batch.request_completed} completed, {batch.request_failed} failed; output file {batch.output_file_id}, error file {batch.error_file_id}"
        )
    echo(
        f"ledger ({label}; energy method {', '.join(t.energy_methods) or '-'}, carbon source {', '.join(t.carbon_sources) or '-'}):"
    )
    echo(
        f"  IT energy {t.it_energy_kwh * 1000:.4f} Wh, facility {t.facility_energy_kwh * 1000:.4f} Wh, grid {t.grid_kwh * 1000:.4f} Wh, renewable {t.renewable_kwh * 1000:.4f} Wh"
    )
    market = "n/a" if t.co2_market_g is None else f"{t.co2_market_g:.5f} g"
    echo(
        f"  CO2 location-based {t.co2_location_g:.5f} g, market-based {market}, embodied {t.embodied_co2_g:.5f} g"
    )
    echo(
        f"  water on-site {t.water_onsite_l:.6f} l, off-site {t.water_offsite_l:.6f} l; cost {t.cost:.7f}; tokens in {t.input_tokens}, out {t.output_tokens}"
    )
    if t.planned_co2_g is not None:
        echo(
            f"  planned (profile estimate) CO2 {t.planned_co2_g:.5f} g, energy {(t.planned_energy_kwh or 0) * 1000:.4f} Wh"
        )
    echo(f"demo finished in {wall_s:.1f} s (time compressed: planned slots were run back to back)")
    return 0 if all(b is not None and b.status == "completed" for b in batches) else 1
