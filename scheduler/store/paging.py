"""Time-ordered object ids and cursor pagination over them (OpenAI ``after``/``limit``/``has_more``)."""

from __future__ import annotations

import secrets
import time
from typing import Any, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

from scheduler.errors import InvalidInput, LineError
from scheduler.store.text import storable

__all__ = ["cursor_page", "new_id", "storable"]

T = TypeVar("T")


def new_id(prefix: str) -> str:
    """Return ``prefix`` + 12 hex digits of Unix milliseconds + 12 random hex digits.

    Ids sort like their creation time, so "newest first" is "largest id first" and a cursor is
    just an id. The prefix reads the REAL clock, not ``scheduler.clock``: ids must stay unique and
    increasing across processes and restarts, and a pinned or replayed clock (tests, the demo)
    may start in the past, which would sort new rows before old ones and break cursors.
    """
    return f"{prefix}{int(time.time() * 1000):012x}{secrets.token_hex(6)}"


def cursor_page(
    session: Session,
    stmt: Select[Any],
    id_col: InstrumentedAttribute[Any],
    *,
    after: str | None,
    limit: int,
    newest_first: bool = True,
) -> tuple[list[T], bool]:
    """Run ``stmt`` one page at a time, ordered by the time-ordered id column.

    Args:
        session: Open session.
        stmt: A select of one entity, already filtered (e.g. by tenant).
        id_col: The entity's id column.
        after: Id of the last object of the previous page (exclusive), or None for the first page.
        limit: Page size (>= 1).
        newest_first: Largest ids first (OpenAI's default for batches and files).

    Returns:
        The page's objects and whether more follow.

    Raises:
        InvalidInput: ``after`` cannot be an id (a NUL character or a lone surrogate).
    """
    if after and not storable(after):
        raise InvalidInput(
            f"after must be the id of an object from a previous page, got {after[:80]!r}",
            [LineError(None, "invalid_value", "after is not an id", "after")],
        )
    if after:
        stmt = stmt.where(id_col < after if newest_first else id_col > after)
    stmt = stmt.order_by(id_col.desc() if newest_first else id_col.asc()).limit(limit + 1)
    rows: list[T] = list(session.scalars(stmt).all())
    return rows[:limit], len(rows) > limit
