"""The shard state machine in ``domain.py`` is the one the store's compare-and-set updates enforce."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from status_updates import status_updates

from scheduler.domain import SHARD_TRANSITIONS, ShardStatus
from scheduler.errors import InvalidTransition
from scheduler.store.shard_moves import shard_from

ROOT = Path(__file__).resolve().parents[2]
GUARDS = {"shard_from", "lease_guard"}


def _guarded(where: ast.Call) -> bool:
    for arg in [*where.args, *(k.value for k in where.keywords)]:
        for sub in ast.walk(arg):
            if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name):
                if sub.func.id == "shard_from":
                    return True
                if sub.func.id == "lease_guard" and any(k.arg == "to" for k in sub.keywords):
                    return True
    return False


def _status_updates_of_shards() -> list[tuple[str, int, bool]]:
    return status_updates(
        "Shard", lambda values: any(k.arg == "status" for k in values.keywords), _guarded
    )


def test_every_shard_status_update_is_a_checked_compare_and_set() -> None:
    updates = _status_updates_of_shards()
    # The scan finds the known moves (claim, done, release, expiry, dispatch, cancel, unqueue)
    assert len(updates) >= 8, updates
    unguarded = [f"{path}:{line}" for path, line, ok in updates if not ok]
    assert not unguarded, (
        f"shard status updated without shard_from()/lease_guard(to=...) in its WHERE: {unguarded}"
    )


def test_moves_outside_the_state_machine_are_refused() -> None:
    for src in ShardStatus:
        for dst in ShardStatus:
            if dst in SHARD_TRANSITIONS[src]:
                shard_from(dst, src)
            else:
                with pytest.raises(InvalidTransition, match="SHARD_TRANSITIONS"):
                    shard_from(dst, src)
    # finished shards never move again
    for done in (ShardStatus.DONE, ShardStatus.FAILED, ShardStatus.CANCELLED):
        assert not SHARD_TRANSITIONS[done]
