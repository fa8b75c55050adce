"""``run_shard``: claim a shard, run its requests, write outputs, book the ledger (no Celery)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import Settings
from scheduler.dispatch.finalize import begin_finalizing, finalize_batch, has_running_shards
from scheduler.dispatch.leases import Claim, claim_shard, mark_done, release_shard
from scheduler.dispatch.outputs import failure_line, success_line, write_jsonl_atomic
from scheduler.dispatch.poison import MAX_ATTEMPTS
from scheduler.dispatch.signals import SignalLookup, ledger_signal
from scheduler.domain import BatchStatus, Fleet, ModelSpec, Pool, Site
from scheduler.errors import LeaseLost, NotFound
from scheduler.store.db import transaction
from scheduler.store.tables import (
    AssignmentRecord,
    Batch,
    BatchRequest,
    File,
    LedgerEntry,
    Shard,
    now_utc,
)
from workers.energy.base import EnergyMeter
from workers.energy.estimate import booked_energy
from workers.energy.window import begin_safely, model_load_energy, window_energy
from workers.engine_cache import EngineCache
from workers.heartbeat import Heartbeat
from workers.ledger import (
    compute_ledger_values,
    deviations,
    planned_share,
    renewable_allowance_kwh,
)
from workers.requests_io import read_requests, run_requests

log = logging.getLogger(__name__)

MeterFactory = Callable[[Site, Pool, ModelSpec], EnergyMeter]
Clock = Callable[[], datetime]


@dataclass(frozen=True, slots=True)
class ShardOutcome:
    """What one ``run_shard`` call did.

    ``status``: ``done`` (ran and booked), ``skipped`` (already done, cancelled or leased by a
    live worker), ``lost`` (lease lost mid-run; results discarded), ``released`` (engine failure;
    re-queued or failed after ``MAX_ATTEMPTS``), ``refused`` (a shard of another site or pool
    than this worker serves: not claimed, left queued for the right worker).
    """

    shard_id: str
    status: str
    attempt: int = 0
    requests_done: int = 0
    requests_failed: int = 0
    batch_finished: bool = False
    engine_s: float = 0.0


@dataclass(frozen=True, slots=True)
class _Work:
    shard: Shard
    batch_id: str
    tenant_id: str
    input_path: Path
    requests: list[tuple[str, int, int]]  # custom_id, byte_offset, byte_len
    assignment: AssignmentRecord | None


def _load(factory: sessionmaker[Session], shard_id: str) -> _Work:
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
        return _Work(
            shard=shard,
            batch_id=batch.id,
            tenant_id=batch.tenant_id,
            input_path=Path(file.path),
            requests=[(c, int(o), int(n)) for c, o, n in reqs],
            assignment=assignment,
        )


def shard_paths(settings: Settings, shard_id: str, attempt: int) -> tuple[Path, Path]:
    """Per-attempt output and error paths of a shard (the ``done`` row names the winner's)."""
    base = settings.data_dir / "shards"
    return base / f"{shard_id}.a{attempt}.out.jsonl", base / f"{shard_id}.a{attempt}.err.jsonl"


def _renewable_booked_kwh(s: Session, site: str, slot: datetime, slot_end: datetime) -> float:
    booked = s.execute(
        select(func.coalesce(func.sum(LedgerEntry.facility_energy_kwh - LedgerEntry.grid_kwh), 0.0))
        .where(LedgerEntry.site == site)
        .where(LedgerEntry.started_at >= slot, LedgerEntry.started_at < slot_end)
    ).scalar_one()
    return float(booked)


def _serves(factory: sessionmaker[Session], shard_id: str, serves: tuple[str, str]) -> bool:
    """Whether the shard belongs to the worker's (site, pool); logs a refusal when not."""
    with factory() as s:
        row = s.execute(select(Shard.site, Shard.pool).where(Shard.id == shard_id)).first()
    if row is None or (row.site, row.pool) == serves:
        return True  # an unknown shard goes on to claim_shard, which reports it
    log.warning(
        "refused shard %s: it is planned for %s.%s but this worker serves %s.%s; "
        "not claimed, left queued for a worker of its queue %s.%s",
        shard_id,
        row.site,
        row.pool,
        *serves,
        row.site,
        row.pool,
    )
    return False


def run_shard(
    shard_id: str,
    *,
    session_factory: sessionmaker[Session],
    settings: Settings,
    fleet: Fleet,
    engine_cache: EngineCache,
    meter_factory: MeterFactory,
    worker_id: str,
    clock: Clock = now_utc,
    signal_lookup: SignalLookup | None = None,
    serves: tuple[str, str] | None = None,
) -> ShardOutcome:
    """Run one shard exactly once in effect, whatever crashes or duplicate messages happen.

    Steps: claim with a lease (compare-and-set; a shard already done or held returns at once),
    read its requests by byte offset, run them (model loaded once per process, swapped only
    between shards), measure IT energy, write per-attempt output and error files atomically,
    then in ONE transaction guarded by the lease: shard ``done`` + counts + one ledger row for
    (shard, attempt) + batch counters (+ ``finalizing`` when it was the last shard). An attempt
    that dies before that transaction books nothing: its energy is lost to the ledger (stated
    in docs/execution.md), and it is never counted twice.

    Args:
        shard_id: the shard to run.
        session_factory: database sessions.
        settings: lease, heartbeat and data directory settings.
        fleet: sites, pools and models.
        engine_cache: the worker process's engine (keeps the loaded model across shards).
        meter_factory: builds the energy meter for a (site, pool, model).
        worker_id: lease owner name (host, pid).
        clock: the time source (tests and the demo pass a simulated clock).
        signal_lookup: signals of the slot the attempt ran in (default: forecast cache).
        serves: ``(site, pool)`` this worker runs; a shard of another one is refused unclaimed
            (``None``: run any shard, as the demo and tests do).

    Returns:
        What happened (see ``ShardOutcome``).

    Raises:
        NotFound: the shard, its batch or its input file does not exist.
    """
    if serves is not None and not _serves(session_factory, shard_id, serves):
        return ShardOutcome(shard_id, "refused")
    claim = claim_shard(
        session_factory, shard_id, worker_id=worker_id, now=clock(), lease_s=settings.lease_s
    )
    if claim is None:
        return ShardOutcome(shard_id, "skipped")
    heartbeat = Heartbeat(session_factory, claim, settings, clock)
    heartbeat.start()
    t0 = time.perf_counter()
    try:
        work = _load(session_factory, shard_id)
        shard = work.shard
        site = fleet.site(shard.site)
        pool = site.pool(shard.pool)
        model = fleet.model(shard.model)
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
        results = run_requests(engine, requests, lease_lost=lambda: heartbeat.lost)
        engine_s = time.perf_counter() - engine_t0
        measurement = window_energy(meter, meter_error, model, pool, engine_s + load_s, load_s)
    except LeaseLost:
        heartbeat.stop()
        return ShardOutcome(shard_id, "lost", claim.attempt)
    except Exception as e:
        heartbeat.stop()
        give_up = claim.attempt >= MAX_ATTEMPTS or isinstance(e, NotFound | KeyError)
        release_shard(session_factory, claim, now=clock(), error=repr(e), give_up=give_up)
        log.exception("shard %s attempt %d failed", shard_id, claim.attempt)
        if give_up:
            _maybe_finalize_after_failure(session_factory, settings, shard_id, clock)
        if isinstance(e, NotFound):
            raise
        return ShardOutcome(shard_id, "released", claim.attempt)
    heartbeat.stop()
    if heartbeat.lost:
        return ShardOutcome(shard_id, "lost", claim.attempt)
    out_path, err_path = shard_paths(settings, shard_id, claim.attempt)
    done = [r for r in results if r.status_code == 200 and r.body is not None]
    failed = [r for r in results if not (r.status_code == 200 and r.body is not None)]
    write_jsonl_atomic(
        out_path, (success_line(work.batch_id, r.custom_id, r.body or {}) for r in done)
    )
    write_jsonl_atomic(
        err_path, (failure_line(work.batch_id, r.custom_id, r.status_code, r.error) for r in failed)
    )
    ended = clock()
    started = ended - timedelta(seconds=measurement.duration_s)
    slot = _slot_of(started, fleet.slot_minutes)
    try:
        with transaction(session_factory) as s:
            mark_done(
                s,
                claim,
                now=ended,
                requests_done=len(done),
                requests_failed=len(failed),
                output_path=str(out_path),
                error_path=str(err_path),
            )
            booking = ledger_signal(
                s, fleet, site.name, slot, work.assignment, lookup=signal_lookup
            )
            signal = booking.signal
            planned = planned_share(work.assignment, shard.request_count)
            in_planned_slot = (
                planned if planned and (planned.site, planned.slot) == (site.name, slot) else None
            )
            input_tokens = sum(r.input_tokens for r in results)
            output_tokens = sum(r.output_tokens for r in results)
            profile = model.profiles.get(pool.gpu)
            energy = booked_energy(
                measurement, profile, input_tokens=input_tokens, output_tokens=output_tokens
            )
            load_energy = None
            if model_load is not None:
                energy, load_energy = model_load_energy(
                    energy,
                    measurement,
                    load_s=model_load.seconds,
                    in_window=loaded_in_window,
                    profile=profile,
                )
            allowance = renewable_allowance_kwh(
                signal,
                duration_s=measurement.duration_s,
                slot_hours=fleet.slot_hours,
                already_booked_kwh=_renewable_booked_kwh(
                    s, site.name, slot, slot + timedelta(minutes=fleet.slot_minutes)
                ),
                planned=in_planned_slot,
                facility_kwh=energy.measurement.energy_kwh * site.pue,
            )
            values = compute_ledger_values(
                energy.measurement,
                site=site,
                pool=pool,
                gpus_per_replica=profile.gpus if profile else 1,
                signal=signal,
                carbon_source=booking.source,
                renewable_allowance_kwh=allowance,
                gpu_hours=energy.gpu_hours,
                average_g_per_kwh=booking.average_g_per_kwh,
            )
            s.add(
                LedgerEntry(
                    batch_id=work.batch_id,
                    shard_id=shard_id,
                    attempt=claim.attempt,
                    tenant_id=work.tenant_id,
                    site=site.name,
                    pool=pool.name,
                    model=model.name,
                    started_at=started,
                    ended_at=ended,
                    requests_done=len(done),
                    requests_failed=len(failed),
                    input_tokens=input_tokens,
                    output_tokens=output_tokens,
                    gpu_hours=values.gpu_hours,
                    it_energy_kwh=values.it_energy_kwh,
                    facility_energy_kwh=values.facility_energy_kwh,
                    energy_method=values.energy_method,
                    renewable_share=values.renewable_share,
                    grid_kwh=values.grid_kwh,
                    carbon_g_per_kwh=values.carbon_g_per_kwh,
                    carbon_source=values.carbon_source,
                    co2_location_g=values.co2_location_g,
                    co2_market_g=values.co2_market_g,
                    embodied_co2_g=values.embodied_co2_g,
                    water_onsite_l=values.water_onsite_l,
                    water_offsite_l=values.water_offsite_l,
                    cost=values.cost,
                    planned_energy_kwh=planned.energy_kwh if planned else None,
                    planned_co2_g=planned.co2_g if planned else None,
                    planned_water_l=planned.water_l if planned else None,
                    planned_cost=planned.cost if planned else None,
                    planned_grid_kwh=planned.grid_kwh if planned else None,
                    carbon_factor=values.carbon_factor,
                    signal_fallback=booking.fallback or booking.average_fallback,
                    co2_marginal_g=values.co2_marginal_g,
                    market_basis=values.market_basis,
                    busy_estimate_kwh=energy.busy_estimate_kwh,
                    model_load_kwh=load_energy.kwh if load_energy else None,
                    model_load_method=load_energy.method if load_energy else None,
                    deviations=deviations(
                        planned,
                        site=site.name,
                        slot=slot,
                        input_tokens=input_tokens,
                        output_tokens=output_tokens,
                        values=values,
                        renewable_kw=signal.renewable_kw,
                        busy_gpu_s=measurement.duration_s * (profile.gpus if profile else 1),
                    ),
                    created_at=now_utc(),
                )
            )
            s.execute(
                update(Batch)
                .where(Batch.id == work.batch_id)
                .values(
                    request_completed=Batch.request_completed + len(done),
                    request_failed=Batch.request_failed + len(failed),
                )
            )
            finishing = begin_finalizing(s, work.batch_id)
    except LeaseLost:
        out_path.unlink(missing_ok=True)
        err_path.unlink(missing_ok=True)
        return ShardOutcome(shard_id, "lost", claim.attempt)
    except Exception as e:  # the completion transaction failed (database error): nothing booked
        out_path.unlink(missing_ok=True)
        err_path.unlink(missing_ok=True)
        return _release_after_completion_error(session_factory, claim, e, clock)
    if finishing:
        finalize_batch(session_factory, settings, work.batch_id, BatchStatus.COMPLETED, now=clock())
    else:
        _finish_cancelling(session_factory, settings, work.batch_id, clock)
    log.info(
        "shard %s attempt %d: %d done, %d failed in %.2fs",
        shard_id,
        claim.attempt,
        len(done),
        len(failed),
        time.perf_counter() - t0,
    )
    return ShardOutcome(
        shard_id, "done", claim.attempt, len(done), len(failed), finishing, engine_s
    )


def _release_after_completion_error(
    factory: sessionmaker[Session], claim: Claim, error: Exception, clock: Clock
) -> ShardOutcome:
    """Give the shard back at once (``queued``, cause recorded) after its completion failed.

    Nothing of the attempt was committed, so re-running it counts nothing twice. If the
    database is still unreachable the release fails too, and the lease expiry takes over.
    """
    log.error("shard %s attempt %d: completion failed: %r", claim.shard_id, claim.attempt, error)
    try:
        release_shard(
            factory,
            claim,
            now=clock(),
            error=f"completion transaction failed: {error!r}",
            give_up=False,
        )
    except Exception as again:
        log.error("shard %s: release failed too (%r); its lease will expire", claim.shard_id, again)
    return ShardOutcome(claim.shard_id, "released", claim.attempt)


def _slot_of(t: datetime, slot_minutes: int) -> datetime:
    from scheduler.dispatch.slots import slot_floor

    return slot_floor(t, slot_minutes)


def _finish_cancelling(
    factory: sessionmaker[Session], settings: Settings, batch_id: str, clock: Clock
) -> None:
    """A cancelling batch becomes cancelled as soon as its last running shard ends."""
    with factory() as s:
        batch = s.get(Batch, batch_id)
        ready = (
            batch is not None
            and batch.status == BatchStatus.CANCELLING.value
            and not has_running_shards(s, batch_id)
        )
    if ready:
        finalize_batch(factory, settings, batch_id, BatchStatus.CANCELLED, now=clock())


def _maybe_finalize_after_failure(
    factory: sessionmaker[Session], settings: Settings, shard_id: str, clock: Clock
) -> None:
    with transaction(factory) as s:
        batch_id = s.execute(select(Shard.batch_id).where(Shard.id == shard_id)).scalar_one()
        finishing = begin_finalizing(s, batch_id)
    if finishing:
        finalize_batch(factory, settings, batch_id, BatchStatus.COMPLETED, now=clock())


def describe(outcome: ShardOutcome) -> dict[str, Any]:
    """The outcome as a JSON-friendly dict (Celery task results, logs)."""
    return {
        "shard_id": outcome.shard_id,
        "status": outcome.status,
        "attempt": outcome.attempt,
        "requests_done": outcome.requests_done,
        "requests_failed": outcome.requests_failed,
        "batch_finished": outcome.batch_finished,
    }
