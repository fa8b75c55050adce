"""The batch state machine in ``domain.py`` is the one the store's status updates enforce."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from scheduler.domain import BATCH_TRANSITIONS, TERMINAL_BATCH_STATUSES, BatchStatus
from scheduler.errors import InvalidTransition
from scheduler.store.batch_moves import batch_from

ROOT = Path(__file__).resolve().parents[2]


def _chain(node: ast.expr) -> list[ast.Call]:
    """The calls of a method chain, outermost first (``update(X).where(...).values(...)``)."""
    calls = []
    while isinstance(node, ast.Call):
        calls.append(node)
        node = node.func.value if isinstance(node.func, ast.Attribute) else node.func
    return calls


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
    found = []
    for path in [*ROOT.glob("scheduler/**/*.py"), *ROOT.glob("workers/**/*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "values"
                and _may_set_status(node)
            ):
                continue
            calls = _chain(node)
            root = calls[-1]
            if not (
                isinstance(root.func, ast.Name)
                and root.func.id == "update"
                and root.args
                and isinstance(root.args[0], ast.Name)
                and root.args[0].id == "Batch"
            ):
                continue
            wheres = [
                c for c in calls if isinstance(c.func, ast.Attribute) and c.func.attr == "where"
            ]
            found.append((str(path.relative_to(ROOT)), node.lineno, any(map(_guarded, wheres))))
    return found


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
