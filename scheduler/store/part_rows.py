"""Batch parts as planning batches: the one query shape and row conversion the planner uses.

The service's re-plan (``dispatch.replan``), its expected arrivals (``dispatch.expected``) and
the store backtest (``backtest_store``) all read parts joined to their batch and turn each row
into a ``PlanningBatch``; they differ only in which rows (``where``) and, for the service, in
how many of the part's requests are still free.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, select

from scheduler.domain import PlanningBatch
from scheduler.store.tables import Batch, BatchPart


def part_rows() -> Select[Any]:
    """``SELECT`` the planning columns of every part joined to its batch (add ``where``)."""
    return select(  # type: ignore[return-value]  # more columns than Select's typed arity
        BatchPart.id,
        BatchPart.requests,
        BatchPart.input_tokens,
        BatchPart.output_tokens,
        BatchPart.model,
        BatchPart.min_quality,
        BatchPart.tokens_estimated,
        BatchPart.max_request_tokens,
        Batch.created_at,
        Batch.deadline,
        Batch.sites,
        Batch.priority,
        Batch.tenant_id,
    ).join(Batch, Batch.id == BatchPart.batch_id)


def planning_batch(
    r: Any,
    *,
    requests: int | None = None,
    submitted_at: datetime | None = None,
) -> PlanningBatch:
    """The part of row ``r`` (from ``part_rows``) as a planning batch.

    ``requests``: how many of its requests to plan (default all), tokens pro rata;
    ``submitted_at``: default the batch's ``created_at``.
    """
    n = r.requests if requests is None else requests
    share = n / r.requests if r.requests else 1.0
    deadline = r.deadline if r.deadline.tzinfo else r.deadline.replace(tzinfo=UTC)
    return PlanningBatch(
        id=r.id,
        requests=n,
        input_tokens=r.input_tokens * share,
        output_tokens=r.output_tokens * share,
        submitted_at=submitted_at or datetime.fromtimestamp(r.created_at, UTC),
        deadline=deadline,
        model=r.model,
        min_quality=r.min_quality if r.model is None else None,
        sites=tuple(r.sites) if r.sites else None,
        priority=r.priority,
        tenant=r.tenant_id,
        tokens_estimated=r.tokens_estimated,
        max_request_tokens=r.max_request_tokens,
    )
