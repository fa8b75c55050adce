"""Finalizing a batch: merge per-shard results into its OpenAI output and error files."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import Settings
from scheduler.dispatch.outputs import EXPIRED_MESSAGE, jsonl_line, read_jsonl, unexecuted_line
from scheduler.domain import BatchStatus, ShardStatus
from scheduler.store.batch_moves import batch_from
from scheduler.store.batches import now_s
from scheduler.store.db import transaction
from scheduler.store.files import save_file
from scheduler.store.shard_moves import shard_from
from scheduler.store.tables import Batch, BatchRequest, Shard
from scheduler.store.webhooks import record_batch_event

_OPEN_SHARDS = (ShardStatus.PLANNED.value, ShardStatus.QUEUED.value, ShardStatus.RUNNING.value)
_STAMP = {
    BatchStatus.COMPLETED: "completed_at",
    BatchStatus.EXPIRED: "expired_at",
    BatchStatus.CANCELLED: "cancelled_at",
    BatchStatus.FAILED: "failed_at",
}


def output_file_ids(batch_id: str) -> tuple[str, str]:
    """Deterministic ids of a batch's output and error files (retried finalizers reuse them)."""
    digest = hashlib.sha256(batch_id.encode()).hexdigest()
    return f"file-out{digest[:20]}", f"file-err{digest[20:40]}"


def all_requests_settled(session: Session, batch_id: str) -> bool:
    """True when every request of the batch sits in a ``done`` or ``failed`` shard."""
    unsettled = session.execute(
        select(func.count(BatchRequest.id))
        .select_from(BatchRequest)
        .outerjoin(Shard, Shard.id == BatchRequest.shard_id)
        .where(
            BatchRequest.batch_id == batch_id,
            (BatchRequest.shard_id.is_(None))
            | (Shard.status.not_in([ShardStatus.DONE.value, ShardStatus.FAILED.value])),
        )
    ).scalar_one()
    return int(unsettled) == 0


def has_running_shards(session: Session, batch_id: str) -> bool:
    """True while a shard of the batch is leased by a worker."""
    n = session.execute(
        select(func.count(Shard.id)).where(
            Shard.batch_id == batch_id, Shard.status == ShardStatus.RUNNING.value
        )
    ).scalar_one()
    return int(n) > 0


def _collect(
    session: Session, batch: Batch, outcome: BatchStatus
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    shards = {s.id: s for s in session.scalars(select(Shard).where(Shard.batch_id == batch.id))}
    requests = session.execute(
        select(BatchRequest.custom_id, BatchRequest.shard_id, BatchRequest.line_no)
        .where(BatchRequest.batch_id == batch.id)
        .order_by(BatchRequest.line_no)
    ).all()
    owner = {cid: sid for cid, sid, _ in requests}
    done_lines: dict[str, dict[str, Any]] = {}
    error_lines: dict[str, dict[str, Any]] = {}
    for shard in shards.values():
        if shard.status != ShardStatus.DONE.value:
            continue
        for target, path in ((done_lines, shard.output_path), (error_lines, shard.error_path)):
            for line in read_jsonl(path):
                cid = str(line.get("custom_id"))
                # Only the shard that owns a request may answer it, and only once.
                if owner.get(cid) == shard.id and cid not in done_lines and cid not in error_lines:
                    target[cid] = line
    for cid, sid, _ in requests:
        if cid in done_lines or cid in error_lines:
            continue
        owner_shard = shards.get(sid) if sid else None
        if owner_shard is not None and owner_shard.status == ShardStatus.FAILED.value:
            error_lines[cid] = unexecuted_line(
                batch.id,
                cid,
                "shard_failed",
                f"the worker could not run it: {owner_shard.last_error}",
            )
        elif outcome is BatchStatus.EXPIRED:
            error_lines[cid] = unexecuted_line(batch.id, cid, "batch_expired", EXPIRED_MESSAGE)
        elif outcome is BatchStatus.COMPLETED:
            error_lines[cid] = unexecuted_line(
                batch.id, cid, "internal_error", "no result was recorded for this request"
            )
        # Cancelled batches list only what ran (as OpenAI does).
    order = {cid: n for cid, _, n in requests}
    out = sorted(done_lines.values(), key=lambda ln: order[ln["custom_id"]])
    err = sorted(error_lines.values(), key=lambda ln: order[ln["custom_id"]])
    return out, err


def _encode(lines: list[dict[str, Any]]) -> Iterator[bytes]:
    for line in lines:
        yield jsonl_line(line).encode()


def _save_lines(
    factory: sessionmaker[Session],
    files_dir: Path,
    lines: list[dict[str, Any]],
    tenant_id: str,
    filename: str,
    file_id: str,
    expires_after_s: int | None = None,
) -> str | None:
    """Save ``lines`` as the ``batch_output`` file ``file_id``; None (no file) when empty."""
    if not lines:
        return None
    with factory() as fs:
        return save_file(
            fs,
            files_dir,
            _encode(lines),
            tenant_id=tenant_id,
            filename=filename,
            purpose="batch_output",
            file_id=file_id,
            expires_after_s=expires_after_s,
        ).id


def finalize_batch(
    factory: sessionmaker[Session],
    settings: Settings,
    batch_id: str,
    outcome: BatchStatus,
    *,
    now: datetime,
) -> bool:
    """Write a batch's output and error files and move it to its terminal ``outcome``.

    Idempotent: file ids are deterministic, and the status change is a compare-and-set from
    the statuses that may lead to ``outcome`` (``finalizing`` for completed and expired,
    ``in_progress`` for expired, ``cancelling`` for cancelled). Outputs come only from shards
    that are ``done``; every request appears at most once across the two files.

    Args:
        factory: session factory.
        settings: files directory.
        batch_id: the batch.
        outcome: ``completed``, ``expired`` or ``cancelled``.
        now: the clock of the caller that decided the outcome (dispatcher tick or worker): the
            terminal stamp (``completed_at`` ...) and the shards' ``finished_at`` use it, so a
            tick that straddles an hour or a deadline stamps the instant it decided at (the
            output files' own ``created_at`` read ``scheduler.clock``).

    Returns:
        True when this call moved the batch to ``outcome``; False if it was already terminal.
    """
    sources = {
        BatchStatus.COMPLETED: (BatchStatus.FINALIZING,),
        BatchStatus.EXPIRED: (BatchStatus.IN_PROGRESS, BatchStatus.FINALIZING),
        # A batch cancelled at once by the API (nothing was running) still gets the files of
        # what had finished, once.
        BatchStatus.CANCELLED: (BatchStatus.CANCELLING, BatchStatus.CANCELLED),
    }[outcome]
    with factory() as s:
        batch = s.get(Batch, batch_id)
        if batch is None or BatchStatus(batch.status) not in sources:
            return False
        if batch.status == BatchStatus.CANCELLED.value and (
            batch.output_file_id or batch.error_file_id
        ):
            return False
        tenant_id = batch.tenant_id
        expires_s = batch.output_expires_after_s  # OpenAI output_expires_after
        already_stamped = getattr(batch, _STAMP[outcome]) is not None
        out, err = _collect(s, batch, outcome)
    out_id, err_id = output_file_ids(batch_id)
    files_dir = settings.files_dir
    files_dir.mkdir(parents=True, exist_ok=True)
    output_file_id = _save_lines(
        factory, files_dir, out, tenant_id, f"{batch_id}_output.jsonl", out_id, expires_s
    )
    error_file_id = _save_lines(
        factory, files_dir, err, tenant_id, f"{batch_id}_error.jsonl", err_id, expires_s
    )
    stamp = int(now.timestamp())  # the clock that decided the outcome (see docs/execution.md)
    values: dict[str, Any] = {
        "status": outcome.value,
        "output_file_id": output_file_id,
        "error_file_id": error_file_id,
        "request_completed": len(out),
        "request_failed": len(err),
        _STAMP[outcome]: stamp,
    }
    with transaction(factory) as s:
        if already_stamped:
            values.pop(_STAMP[outcome])
        res = s.execute(
            update(Batch)
            .where(
                Batch.id == batch_id,
                batch_from(outcome, *sources),
                Batch.output_file_id.is_(None),
                Batch.error_file_id.is_(None),
            )
            .values(**values)
        )
        if outcome is not BatchStatus.CANCELLED:
            s.execute(
                update(Shard)
                .where(
                    Shard.batch_id == batch_id,
                    shard_from(ShardStatus.CANCELLED, ShardStatus.PLANNED, ShardStatus.QUEUED),
                )
                .values(status=ShardStatus.CANCELLED.value, finished_at=now)
            )
        moved = bool(res.rowcount == 1)  # type: ignore[attr-defined]
        if moved:  # the event commits with the status (once per batch: recorded events skip)
            record_batch_event(s, batch_id, outcome.value)
        return moved


def begin_finalizing(session: Session, batch_id: str) -> bool:
    """Inside the caller's transaction: ``in_progress`` -> ``finalizing`` once all is settled.

    Returns:
        True when this call moved the batch (the caller then runs ``finalize_batch``).
    """
    if not all_requests_settled(session, batch_id):
        return False
    res = session.execute(
        update(Batch)
        .where(Batch.id == batch_id, batch_from(BatchStatus.FINALIZING, BatchStatus.IN_PROGRESS))
        .values(status=BatchStatus.FINALIZING.value, finalizing_at=now_s())
    )
    return bool(res.rowcount == 1)  # type: ignore[attr-defined]
