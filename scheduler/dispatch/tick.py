"""The dispatch tick: re-plan when needed, queue due shards by name, reconcile lost work."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import Settings
from scheduler.dispatch.budget import advance_pacer
from scheduler.dispatch.plan_write import write_lock
from scheduler.dispatch.reconcile import (
    all_queued,
    close_batches,
    expire_leases,
    last_model_per_pool,
    stale_queued,
    unqueue,
)
from scheduler.dispatch.replan import Planner, replan
from scheduler.dispatch.retention import RetentionReport, sweep_retention
from scheduler.dispatch.signals import HorizonSignals
from scheduler.dispatch.triggers import replan_trigger
from scheduler.domain import BatchStatus, Fleet, ShardStatus
from scheduler.intake.pending import validate_all_pending
from scheduler.store.db import transaction
from scheduler.store.shard_moves import shard_from
from scheduler.store.tables import Batch, Shard

log = logging.getLogger(__name__)

RUN_SHARD_TASK = "gridshift.run_shard"
TICK_TASK = "gridshift.tick"


class Send(Protocol):
    """Sends a task by name to a queue: ``send("gridshift.run_shard", shard_id, queue="s.p")``."""

    def __call__(self, name: str, *args: Any, queue: str) -> None:
        """Enqueue ``name(*args)`` on ``queue`` (no ETA, no countdown)."""


@dataclass
class TickReport:
    """What one tick did (for logs and tests)."""

    plan_id: int | None = None
    trigger: str | None = None
    queued: list[str] = field(default_factory=list)
    requeued_expired: list[str] = field(default_factory=list)
    resent_stale: list[str] = field(default_factory=list)
    unsent: list[str] = field(default_factory=list)
    broker_lost: bool = False
    closed: dict[str, list[str]] = field(default_factory=dict)
    validated: list[str] = field(default_factory=list)
    retention: RetentionReport | None = None


def queue_name(site: str, pool: str) -> str:
    """The Celery queue of a pool: ``<site>.<pool>``."""
    return f"{site}.{pool}"


def order_for_pool(shards: list[Shard], loaded_model: str | None) -> list[Shard]:
    """Order one pool's due shards to minimise model swaps.

    Shards are grouped by model; the model the pool has loaded goes first, the other groups
    follow by their earliest slot; within a group, by slot then creation. A pool thus swaps at
    most once per model present, instead of once per change of model in slot order.
    """
    groups: dict[str, list[Shard]] = defaultdict(list)
    for sh in shards:
        groups[sh.model].append(sh)
    for g in groups.values():
        g.sort(key=lambda x: (x.slot_start, x.created_at, x.id))
    order = sorted(
        groups, key=lambda m: (m != loaded_model, groups[m][0].slot_start, groups[m][0].created_at)
    )
    return [sh for m in order for sh in groups[m]]


def promote_due(factory: sessionmaker[Session], *, now: datetime) -> list[Shard]:
    """Move due PLANNED shards (slot started) of in-progress batches to QUEUED, in send order.

    Takes the plan write lock (``plan_write.write_lock``) for its short transaction, so a
    re-plan being stored never replaces a shard this tick queues; only shards this call really
    moved (compare-and-set) are returned to be sent.
    """
    with transaction(factory) as s:
        write_lock(s)
        due = list(
            s.scalars(
                select(Shard)
                .join(Batch, Batch.id == Shard.batch_id)
                .where(
                    Shard.status == ShardStatus.PLANNED.value,
                    Shard.slot_start <= now,
                    Batch.status == BatchStatus.IN_PROGRESS.value,
                )
            )
        )
        if not due:
            return []
        loaded = last_model_per_pool(s)
        per_pool: dict[tuple[str, str], list[Shard]] = defaultdict(list)
        for sh in due:
            per_pool[(sh.site, sh.pool)].append(sh)
        ordered = [
            sh for key in sorted(per_pool) for sh in order_for_pool(per_pool[key], loaded.get(key))
        ]
        ids = [sh.id for sh in ordered]
        moved: set[str] = set()
        for i in range(0, len(ids), 500):
            moved |= set(
                s.scalars(
                    update(Shard)
                    .where(
                        Shard.id.in_(ids[i : i + 500]),
                        shard_from(ShardStatus.QUEUED, ShardStatus.PLANNED),
                    )
                    .values(status=ShardStatus.QUEUED.value, queued_at=now)
                    .returning(Shard.id)
                    .execution_options(synchronize_session=False)
                )
            )
        return [sh for sh in ordered if sh.id in moved]


def tick(
    session_factory: sessionmaker[Session],
    settings: Settings,
    now: datetime,
    send: Send | Callable[..., None],
    *,
    fleet: Fleet,
    signals_for: HorizonSignals | None = None,
    planner: Planner | None = None,
    allow_replan: bool = True,
    requeue_after_s: float | None = None,
) -> TickReport:
    """One dispatcher step; safe to call at any period (one dispatcher instance at a time).

    1. Expired leases: running shards whose lease ran out go back to ``queued`` and are re-sent.
    2. Cancelling and past-deadline batches stop their unstarted shards and are finalized once
       nothing of theirs runs; batches stuck in ``finalizing`` are finalized again. Batches
       left ``validating`` (large files) are validated; the retention sweep removes expired
       files, per-shard files of finalised batches and old crash leftovers.
    3. Inline re-planning on a new batch or a slot boundary (see ``replan_trigger``), only
       with ``allow_replan``: the embedded demo and tests plan inside the tick; the service
       plans in its planner loop (``scheduler.dispatch.planner_loop``) so that a tick never
       waits on a solve, and ticks with ``allow_replan=False``.
    4. Due shards (``slot_start <= now``) go ``planned`` -> ``queued`` and are sent by name to
       ``<site>.<pool>``, ordered per pool to minimise model swaps. Sending happens after the
       commit, so a worker always finds its shard queued; a lost message is re-sent by step 5.
    5. Queued shards not started after ``requeue_after_s`` on an idle pool are re-sent.

    Args:
        session_factory: session factory.
        settings: lease and shard settings.
        now: the dispatcher's clock (tests and the demo pass simulated times).
        send: the task sender (Celery ``send_task`` by name, or an in-process queue).
        fleet: the fleet.
        signals_for: horizon signals for re-planning (default: forecasts service).
        planner: the solver (default ``plan_problem``).
        allow_replan: False skips step 3 (the service's planner loop re-plans; the demo runs
            one plan as made).
        requeue_after_s: default ``max(2 x lease_s, 10 x tick_s)``.

    Returns:
        A report of what was done.
    """
    report = TickReport()
    report.requeued_expired = expire_leases(session_factory, now=now)
    for shard_id, queue in _queues(session_factory, report.requeued_expired):
        try:
            send(RUN_SHARD_TASK, shard_id, queue=queue)
        except Exception as exc:  # queued: re-sent by step 5 once the broker is back
            log.warning("re-sending expired shard %s failed: %r", shard_id, exc)
            break
    report.closed = close_batches(session_factory, settings, now=now)
    report.validated = validate_all_pending(
        session_factory, fleet, max_requests=settings.max_requests_per_batch
    )
    report.retention = sweep_retention(session_factory, settings)
    advance_pacer(session_factory, fleet, now)
    if allow_replan:
        with session_factory() as s:
            report.trigger = replan_trigger(s, fleet, now)
        if report.trigger:
            report.plan_id = replan(
                session_factory,
                settings,
                fleet,
                now,
                trigger=report.trigger,
                signals_for=signals_for,
                planner=planner,
            )
    promoted = promote_due(session_factory, now=now)
    report.queued = _send_all(send, promoted)
    if len(report.queued) < len(promoted):
        report.unsent = [sh.id for sh in promoted[len(report.queued) :]]
        with transaction(session_factory) as s:
            unqueue(s, report.unsent, queued_at=now)
        log.warning(
            "broker unreachable: %d shards back to due for the next tick", len(report.unsent)
        )
        return report
    after = (
        requeue_after_s
        if requeue_after_s is not None
        else max(2 * settings.lease_s, 10 * settings.tick_s)
    )
    report.broker_lost = _broker_lost(send)
    with transaction(session_factory) as s:
        if report.broker_lost:
            sent = set(report.queued)
            stale = [sh for sh in all_queued(s) if sh.id not in sent]
        else:
            stale = stale_queued(s, now=now, requeue_after_s=after)
        for sh in stale:
            s.execute(update(Shard).where(Shard.id == sh.id).values(queued_at=now))
    report.resent_stale = _send_all(send, stale)
    if report.queued or report.requeued_expired or report.resent_stale or report.plan_id:
        log.info(
            "tick %s: plan=%s queued=%d requeued=%d resent=%d closed=%s",
            now.isoformat(),
            report.plan_id,
            len(report.queued),
            len(report.requeued_expired),
            len(report.resent_stale),
            {k: len(v) for k, v in report.closed.items() if v},
        )
    return report


def _send_all(send: Send | Callable[..., None], shards: list[Shard]) -> list[str]:
    """Send ``shards`` in order; stop at the first failure. Return the ids sent."""
    sent: list[str] = []
    for sh in shards:
        try:
            send(RUN_SHARD_TASK, sh.id, queue=queue_name(sh.site, sh.pool))
        except Exception as exc:  # broker down: the caller puts the rest back
            log.warning("sending shard %s failed: %r", sh.id, exc)
            break
        sent.append(sh.id)
    return sent


def _broker_lost(send: Send | Callable[..., None]) -> bool:
    """Ask the sender whether the broker lost its messages (senders without a check: no)."""
    check = getattr(send, "lost_messages", None)
    if check is None:
        return False
    try:
        lost = bool(check())
    except Exception as exc:
        log.warning("broker sentinel check failed: %r", exc)
        return False
    if lost:
        log.warning(
            "no sentinel on the broker (a first tick against an empty broker, or the broker "
            "lost its messages): re-sending every queued shard"
        )
    return lost


def _queues(factory: sessionmaker[Session], shard_ids: list[str]) -> list[tuple[str, str]]:
    if not shard_ids:
        return []
    with factory() as s:
        rows = s.execute(select(Shard.id, Shard.site, Shard.pool).where(Shard.id.in_(shard_ids)))
        return [(sid, queue_name(site, pool)) for sid, site, pool in rows]
