"""The batch state machine in ``domain.py`` is the one the store's status updates enforce."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from status_updates import status_updates

from scheduler.domain import BATCH_TRANSITIONS, TERMINAL_BATCH_STATUSES, BatchStatus
from scheduler.errors import InvalidTransition
from scheduler.store.batch_moves import batch_from

ROOT = Path(__file__).resolve().parents[2]


def _may_set_status(values: ast.Call) -> bool:
    """``.values(status=...)`` or ``.values(**mapping)`` (which may hold a status)."""
    return any(k.arg in ("status", None) for k in values.keywords)


def _guarded(where: ast.Call) -> bool:
    return any(
        isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) and sub.func.id == "batch_from"
        for arg in [*where.args, *(k.value for k in where.keywords)]
        for sub in ast.walk(arg)
    )


def _status_updates_of_batches() -> list[tuple[str, int, bool]]:
    return status_updates("Batch", _may_set_status, _guarded)


def test_every_batch_status_update_is_a_checked_compare_and_set() -> None:
    updates = _status_updates_of_batches()
    # The scan finds the known moves: validated/failed (intake), finalizing and the outcome
    assert len(updates) >= 3, updates
    unguarded = [f"{path}:{line}" for path, line, ok in updates if not ok]
    assert not unguarded, f"batch status updated without batch_from() in its WHERE: {unguarded}"


def test_moves_outside_the_state_machine_are_refused() -> None:
    for src in BatchStatus:
        for dst in BatchStatus:
            if dst in BATCH_TRANSITIONS[src] or dst is src:
                batch_from(dst, src)
            else:
                with pytest.raises(InvalidTransition, match="BATCH_TRANSITIONS"):
                    batch_from(dst, src)


def test_the_lifecycle_openai_documents_is_allowed_and_finished_batches_never_move() -> None:
    allowed = [
        (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS),
        (BatchStatus.VALIDATING, BatchStatus.FAILED),
        (BatchStatus.IN_PROGRESS, BatchStatus.FINALIZING),
        (BatchStatus.FINALIZING, BatchStatus.COMPLETED),
        (BatchStatus.IN_PROGRESS, BatchStatus.EXPIRED),
        (BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING),
        (BatchStatus.CANCELLING, BatchStatus.CANCELLED),
    ]
    for src, dst in allowed:
        batch_from(dst, src)
    for done in TERMINAL_BATCH_STATUSES:
        for dst in BatchStatus:
            if dst is not done:
                with pytest.raises(InvalidTransition, match=f"{done.value} -> {dst.value}"):
                    batch_from(dst, done)
    with pytest.raises(InvalidTransition, match="completed -> in_progress"):
        batch_from(BatchStatus.IN_PROGRESS, BatchStatus.FINALIZING, BatchStatus.COMPLETED)
    with pytest.raises(InvalidTransition, match="at least one source"):
        batch_from(BatchStatus.FAILED)
