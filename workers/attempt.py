"""One shard attempt's work: load what it runs, ``execute`` its requests, write its outputs.

``run_shard`` (``workers.execute``) calls these between claiming the shard and booking it:
``load_work`` reads the shard, its batch and its requests' byte offsets; ``execute`` reads the
requests, runs them on the cached engine inside the energy meter's window and ends the window;
``write_outputs`` writes the attempt's output and error files atomically (per attempt, so a
re-run never appends to another attempt's file).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import Settings
from scheduler.dispatch.outputs import failure_line, success_line, write_jsonl_atomic
from scheduler.domain import Fleet, ModelSpec, Pool, Site
from scheduler.errors import NotFound
from scheduler.store.tables import AssignmentRecord, Batch, BatchRequest, File, Shard
from workers.energy.base import EnergyMeter, Measurement
from workers.energy.window import begin_safely, window_energy
from workers.engine_cache import EngineCache, ModelLoad
from workers.engines.base import EngineResult
from workers.requests_io import read_requests, run_requests

MeterFactory = Callable[[Site, Pool, ModelSpec], EnergyMeter]


@dataclass(frozen=True, slots=True)
class Work:
    """What a claimed shard runs: the shard row, its batch and its requests' byte ranges."""

    shard: Shard
    batch_id: str
    tenant_id: str
    input_path: Path
    requests: list[tuple[str, int, int]]  # custom_id, byte_offset, byte_len
    assignment: AssignmentRecord | None


@dataclass(frozen=True, slots=True)
class Ran:
    """What ``execute`` did: results, the window's raw measurement and the model load."""

    site: Site
    pool: Pool
    model: ModelSpec
    results: list[EngineResult]
    measurement: Measurement
    engine_s: float
    loaded_in_window: bool
    model_load: ModelLoad | None

    @property
    def done(self) -> list[EngineResult]:
        """Requests answered with status 200 and a body."""
        return [r for r in self.results if r.status_code == 200 and r.body is not None]

    @property
    def failed(self) -> list[EngineResult]:
        """Requests the engine answered with an error (or no body)."""
        return [r for r in self.results if not (r.status_code == 200 and r.body is not None)]


def load_work(factory: sessionmaker[Session], shard_id: str) -> Work:
    """The shard's row, batch, input file and request byte ranges (in input order).

    Raises:
        NotFound: the shard, its batch or its input file does not exist.
    """
    with factory() as s:
        shard = s.get(Shard, shard_id)
        if shard is None:
            raise NotFound(f"no shard {shard_id!r}")
        batch = s.get(Batch, shard.batch_id)
        if batch is None:
            raise NotFound(f"shard {shard_id} belongs to a batch that no longer exists")
        file = s.get(File, batch.input_file_id)
        if file is None:
            raise NotFound(f"input file {batch.input_file_id!r} of batch {batch.id} is missing")
        reqs = s.execute(
            select(BatchRequest.custom_id, BatchRequest.byte_offset, BatchRequest.byte_len)
            .where(BatchRequest.shard_id == shard_id)
            .order_by(BatchRequest.line_no)
        ).all()
        assignment = s.get(AssignmentRecord, shard.assignment_id) if shard.assignment_id else None
        return Work(
            shard=shard,
            batch_id=batch.id,
            tenant_id=batch.tenant_id,
            input_path=Path(file.path),
            requests=[(c, int(o), int(n)) for c, o, n in reqs],
            assignment=assignment,
        )


def execute(
    work: Work,
    *,
    fleet: Fleet,
    engine_cache: EngineCache,
    meter_factory: MeterFactory,
    lease_lost: Callable[[], bool],
) -> Ran:
    """Run the shard's requests inside one energy window (model load included).

    The engine is loaded once per process and swapped only between shards; a load inside the
    window is booked once, by this shard (``EngineCache.take_load``).

    Raises:
        LeaseLost: the heartbeat lost the lease mid-run (results are worthless).
        Exception: whatever the engine raised (the caller releases the shard).
    """
    site = fleet.site(work.shard.site)
    pool = site.pool(work.shard.pool)
    model = fleet.model(work.shard.model)
    requests = read_requests(work.input_path, work.requests)
    meter = meter_factory(site, pool, model)
    meter_error = begin_safely(meter)
    load_t0 = time.perf_counter()
    loads_before = engine_cache.loads
    engine = engine_cache.get(pool.engine, model)  # a model load is inside the window
    load_s = time.perf_counter() - load_t0
    loaded_in_window = engine_cache.loads != loads_before
    model_load = engine_cache.take_load(model.name)  # booked once, by this shard
    engine_t0 = time.perf_counter()
    results = run_requests(engine, requests, lease_lost=lease_lost)
    engine_s = time.perf_counter() - engine_t0
    measurement = window_energy(meter, meter_error, model, pool, engine_s + load_s, load_s)
    return Ran(site, pool, model, results, measurement, engine_s, loaded_in_window, model_load)


def shard_paths(settings: Settings, shard_id: str, attempt: int) -> tuple[Path, Path]:
    """Per-attempt output and error paths of a shard (the ``done`` row names the winner's)."""
    base = settings.data_dir / "shards"
    return base / f"{shard_id}.a{attempt}.out.jsonl", base / f"{shard_id}.a{attempt}.err.jsonl"


def write_outputs(settings: Settings, work: Work, attempt: int, ran: Ran) -> tuple[Path, Path]:
    """Write the attempt's output and error files atomically; their paths.

    Raises:
        OSError: the data directory could not take them (full disk, quota, read-only, I/O
            error); nothing half-written stays behind under the final names.
    """
    out_path, err_path = shard_paths(settings, work.shard.id, attempt)
    try:
        write_jsonl_atomic(
            out_path, (success_line(work.batch_id, r.custom_id, r.body or {}) for r in ran.done)
        )
        write_jsonl_atomic(
            err_path,
            (failure_line(work.batch_id, r.custom_id, r.status_code, r.error) for r in ran.failed),
        )
    except OSError:
        discard_outputs(out_path, err_path)
        raise
    return out_path, err_path


def discard_outputs(*paths: Path) -> None:
    """Remove an attempt's files (its results were not booked); missing files are fine."""
    for p in paths:
        with contextlib.suppress(OSError):  # a read-only data dir: retention sweeps it later
            p.unlink(missing_ok=True)
