"""``run_shard``: claim a shard, execute its requests, meter the attempt, book it (no Celery).

The steps, each a function of its own:

1. ``claim`` (``scheduler.dispatch.leases.claim_shard``): a compare-and-set lease; a shard
   already done, cancelled or held by a live worker returns at once;
2. ``execute`` (``workers.attempt``): read the requests by byte offset, run them (model loaded
   once per process, swapped only between shards) inside one energy window;
3. ``write_outputs`` (``workers.attempt``): per-attempt output and error files, atomically;
4. ``meter`` and ``book`` (``workers.booking``): the booked energy, then ONE transaction
   guarded by the lease: shard ``done`` + counts + one ledger row + batch counters.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import Settings
from scheduler.dispatch.finalize import begin_finalizing, finalize_batch, has_running_shards
from scheduler.dispatch.leases import Claim, claim_shard, release_shard
from scheduler.dispatch.poison import MAX_ATTEMPTS, counted_attempts
from scheduler.dispatch.signals import SignalLookup
from scheduler.domain import BatchStatus, Fleet
from scheduler.errors import LeaseLost, NotFound
from scheduler.store.db import transaction
from scheduler.store.tables import Batch, Shard, now_utc
from workers.attempt import (
    MeterFactory,
    Ran,
    Work,
    discard_outputs,
    execute,
    load_work,
    shard_paths,
    write_outputs,
)
from workers.booking import book, meter
from workers.engine_cache import EngineCache
from workers.heartbeat import Heartbeat
from workers.storage import StorageGuard, is_storage_fault

__all__ = ["Clock", "MeterFactory", "ShardOutcome", "describe", "run_shard", "shard_paths"]

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

#: Longest wait (s) for free space before a shard is left queued (``deferred``).
DEFER_WAIT_S = 30.0


@dataclass(frozen=True, slots=True)
class ShardOutcome:
    """What one ``run_shard`` call did.

    ``status``: ``done`` (ran and booked), ``skipped`` (already done, cancelled or leased by a
    live worker), ``lost`` (lease lost mid-run; results discarded), ``released`` (engine failure;
    re-queued or failed after ``MAX_ATTEMPTS``), ``refused`` (a shard of another site or pool
    than this worker serves: not claimed, left queued for the right worker), ``storage_fault``
    (the data dir failed: re-queued, the attempt not counted, the worker backs off),
    ``deferred`` (too little free space or backing off: not claimed, left queued).
    """

    shard_id: str
    status: str
    attempt: int = 0
    requests_done: int = 0
    requests_failed: int = 0
    batch_finished: bool = False
    engine_s: float = 0.0


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
    storage: StorageGuard | None = None,
) -> ShardOutcome:
    """Run one shard exactly once in effect, whatever crashes or duplicate messages happen.

    Claim, execute, write outputs, meter, book (see the module docstring). An attempt that
    dies before the booking transaction books nothing: its energy is lost to the ledger
    (stated in docs/execution.md), and it is never counted twice.

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
        storage: the worker's data-dir guard: checked before claiming (free space, backoff),
            told of storage faults (``None``: no check; faults are still not counted).

    Returns:
        What happened (see ``ShardOutcome``).

    Raises:
        NotFound: the shard, its batch or its input file does not exist.
    """
    if serves is not None and not _serves(session_factory, shard_id, serves):
        return ShardOutcome(shard_id, "refused")
    if storage is not None and not storage.wait_ready(min(settings.lease_s, DEFER_WAIT_S)):
        log.warning("shard %s left queued: %s", shard_id, storage.snapshot())
        return ShardOutcome(shard_id, "deferred")
    claim = claim_shard(
        session_factory, shard_id, worker_id=worker_id, now=clock(), lease_s=settings.lease_s
    )
    if claim is None:
        return ShardOutcome(shard_id, "skipped")
    t0 = time.perf_counter()
    heartbeat = Heartbeat(session_factory, claim, settings, clock)
    heartbeat.start()
    try:
        work = load_work(session_factory, shard_id)
        ran = execute(
            work,
            fleet=fleet,
            engine_cache=engine_cache,
            meter_factory=meter_factory,
            lease_lost=lambda: heartbeat.lost,
        )
    except LeaseLost:
        heartbeat.stop()
        return ShardOutcome(shard_id, "lost", claim.attempt)
    except Exception as e:
        heartbeat.stop()
        if is_storage_fault(e):  # e.g. building the sample model on a full disk
            return _release_after_storage_fault(session_factory, claim, e, clock, storage)
        return _release_after_engine_error(session_factory, settings, claim, e, clock)
    heartbeat.stop()
    if heartbeat.lost:
        return ShardOutcome(shard_id, "lost", claim.attempt)
    try:
        outputs = write_outputs(settings, work, claim.attempt, ran)
    except OSError as e:  # full disk, quota, read-only data dir: infrastructure, not poison
        return _release_after_storage_fault(session_factory, claim, e, clock, storage)
    if storage is not None:
        storage.wrote()
    return _book_and_finish(
        session_factory, settings, fleet, claim, work, ran, outputs, clock, signal_lookup, t0
    )


def _book_and_finish(
    factory: sessionmaker[Session],
    settings: Settings,
    fleet: Fleet,
    claim: Claim,
    work: Work,
    ran: Ran,
    outputs: tuple[Path, Path],
    clock: Clock,
    signal_lookup: SignalLookup | None,
    t0: float,
) -> ShardOutcome:
    """``meter`` and ``book`` the attempt, then finalize its batch if it was the last shard."""
    try:
        finishing = book(
            factory,
            claim,
            work,
            ran,
            meter(ran),
            outputs,
            fleet=fleet,
            ended=clock(),
            signal_lookup=signal_lookup,
        )
    except LeaseLost:
        discard_outputs(*outputs)
        return ShardOutcome(claim.shard_id, "lost", claim.attempt)
    except Exception as e:  # the completion transaction failed (database error): nothing booked
        discard_outputs(*outputs)
        return _release_after_completion_error(factory, claim, e, clock)
    try:
        if finishing:
            finalize_batch(factory, settings, work.batch_id, BatchStatus.COMPLETED, now=clock())
        else:
            _finish_cancelling(factory, settings, work.batch_id, clock)
    except OSError as e:  # booked; the batch stays finalizing and the tick finalizes it again
        log.error("batch %s: writing its result files failed (%r)", work.batch_id, e)
    done, failed = len(ran.done), len(ran.failed)
    log.info(
        "shard %s attempt %d: %d done, %d failed in %.2fs",
        claim.shard_id,
        claim.attempt,
        done,
        failed,
        time.perf_counter() - t0,
    )
    return ShardOutcome(
        claim.shard_id, "done", claim.attempt, done, failed, finishing, ran.engine_s
    )


def _release_after_storage_fault(
    factory: sessionmaker[Session],
    claim: Claim,
    error: Exception,
    clock: Clock,
    storage: StorageGuard | None,
) -> ShardOutcome:
    """Give the shard back after a storage fault: re-queued, the attempt not counted.

    Nothing of the attempt was booked or kept. The worker backs off before claiming again.
    """
    log.error(
        "shard %s attempt %d: storage fault (%r): re-queued, attempt not counted",
        claim.shard_id,
        claim.attempt,
        error,
    )
    try:
        release_shard(
            factory,
            claim,
            now=clock(),
            error=f"storage fault, not counted against the requests: {error!r}",
            give_up=False,
            storage_fault=True,
        )
    except Exception as again:
        log.error("shard %s: release failed too (%r); its lease will expire", claim.shard_id, again)
    if storage is not None:
        storage.fault(error)
    return ShardOutcome(claim.shard_id, "storage_fault", claim.attempt)


def _release_after_engine_error(
    factory: sessionmaker[Session],
    settings: Settings,
    claim: Claim,
    error: Exception,
    clock: Clock,
) -> ShardOutcome:
    """Give the shard back after its run failed: re-queued, or failed after ``MAX_ATTEMPTS``."""
    with factory() as s:
        counted = counted_attempts(s, claim.shard_id, claim.attempt)
    give_up = counted >= MAX_ATTEMPTS or isinstance(error, NotFound | KeyError)
    release_shard(factory, claim, now=clock(), error=repr(error), give_up=give_up)
    log.error("shard %s attempt %d failed", claim.shard_id, claim.attempt, exc_info=error)
    if give_up:
        _maybe_finalize_after_failure(factory, settings, claim.shard_id, clock)
    if isinstance(error, NotFound):
        raise error
    return ShardOutcome(claim.shard_id, "released", claim.attempt)


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
