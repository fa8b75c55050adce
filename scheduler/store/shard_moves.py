"""Shard status moves as compare-and-set conditions, checked against ``SHARD_TRANSITIONS``.

Every ``UPDATE shards SET status = ...`` in the code base puts ``shard_from(to, *sources)`` (or
``lease_guard(claim, to=...)``, built on it) in its ``WHERE``: the condition admits only rows in
one of ``sources``, and building it fails at once for a move the state machine in
``scheduler.domain`` does not allow. ``tests/unit/test_shard_moves.py`` checks that no status
update goes around it.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement

from scheduler.domain import ShardStatus, can_transition_shard
from scheduler.errors import InvalidTransition
from scheduler.store.tables import Shard


def shard_from(to: ShardStatus, *sources: ShardStatus) -> ColumnElement[bool]:
    """The ``WHERE`` condition of a move to ``to`` from any of ``sources``.

    Raises:
        InvalidTransition: a source may not move to ``to`` (a programming error).
    """
    if not sources:
        raise InvalidTransition(f"a move to {to.value} needs at least one source status")
    bad = [s.value for s in sources if not can_transition_shard(s, to)]
    if bad:
        raise InvalidTransition(
            f"shard status {', '.join(bad)} -> {to.value} is not in SHARD_TRANSITIONS"
        )
    if len(sources) == 1:
        return Shard.status == sources[0].value
    return Shard.status.in_([s.value for s in sources])
