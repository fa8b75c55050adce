"""Batch status moves as compare-and-set conditions, checked against ``BATCH_TRANSITIONS``.

Every ``UPDATE batches SET status = ...`` puts ``batch_from(to, *sources)`` in its ``WHERE``
(the ORM path, ``scheduler.store.batches.transition_batch``, checks the same table): the
condition admits only rows in one of ``sources``, and building it fails at once for a move the
state machine in ``scheduler.domain`` does not allow. A source equal to ``to`` is no move (the
update keeps the status and changes other columns, as finalize does for a batch the API
cancelled at once). ``tests/unit/test_batch_moves.py`` checks that no status update goes around it.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement

from scheduler.domain import BatchStatus, can_transition_batch
from scheduler.errors import InvalidTransition
from scheduler.store.tables import Batch


def batch_from(to: BatchStatus, *sources: BatchStatus) -> ColumnElement[bool]:
    """The ``WHERE`` condition of a move to ``to`` from any of ``sources``.

    Raises:
        InvalidTransition: a source may not move to ``to`` (a programming error).
    """
    if not sources:
        raise InvalidTransition(f"a move to {to.value} needs at least one source status")
    bad = [s.value for s in sources if s is not to and not can_transition_batch(s, to)]
    if bad:
        raise InvalidTransition(
            f"batch status {', '.join(bad)} -> {to.value} is not in BATCH_TRANSITIONS"
        )
    if len(sources) == 1:
        return Batch.status == sources[0].value
    return Batch.status.in_([s.value for s in sources])
