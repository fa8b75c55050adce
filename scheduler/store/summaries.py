"""Per-batch summary of plan and outcome: the ``gridshift`` field of a batch object.

``planned`` comes from the assignment each shard was cut from (whatever plan version placed it,
so it survives re-plans) plus the current plan's uncut assignments (estimates by construction);
``actual`` from the ledger (measured or estimated, as each entry says). Before anything is planned or run
the figures are zeros and the lists empty. Summaries of many batches are built together with a
constant number of queries (``IN (...)`` filters, grouped here), so listing a page of batches
does not cost several round trips per batch.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from scheduler.store.tables import (
    AssignmentRecord,
    Batch,
    BatchPart,
    LedgerEntry,
    PlanRecord,
    Shard,
)
from scheduler.store.usage import batch_usage

# Batch ids per round of queries: keeps every ``IN (...)`` list well under the bound-parameter
# limits of SQLite and PostgreSQL while a page of batches (at most 100) takes one round.
CHUNK_IDS = 500


def _unix(value: Any) -> int | None:
    return None if value is None else int(value.timestamp())


def _energy_method(methods: set[str]) -> str | None:
    if not methods:
        return None
    return methods.pop() if len(methods) == 1 else "mixed"


def batch_summary(session: Session, batch_id: str) -> dict[str, Any]:
    """Summarise a batch's options, parts, current plan, shards and ledger.

    Returns:
        A JSON-ready dict: ``deadline`` (Unix s), ``min_quality``, ``sites``, ``priority``,
        ``parts`` (token totals, ``tokens_estimated``), ``planned`` (plan id, slots with site,
        pool, model, slot_start, requests, energy_kwh, co2_g, water_l, cost; totals; always
        ``estimated``), ``shards`` (count per status), ``actual`` (ledger totals: energy_kwh
        (facility), it_energy_kwh, co2_g (location-based incl. embodied), co2_market_g,
        embodied_co2_g, water_l, cost, requests_done/failed) and ``energy_method``
        (``estimated`` / ``measured-nvml`` / ``measured-rapl`` / ``mixed``, None before anything
        ran).

    Raises:
        KeyError: no batch ``batch_id``.
    """
    return batch_summaries(session, [batch_id])[batch_id]


def batch_summaries(session: Session, batch_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Summarise many batches at once, exactly as ``batch_summary`` does for each.

    Uses a constant number of queries (seven) per ``CHUNK_IDS`` distinct ids, whatever the
    number of parts, assignments, shards and ledger entries.

    Args:
        batch_ids: Batch ids; duplicates are summarised once.

    Returns:
        Batch id -> the dict ``batch_summary`` returns for it; empty for no ids.

    Raises:
        KeyError: one of ``batch_ids`` names no batch (the first missing id, in the order given).
    """
    ids = list(dict.fromkeys(batch_ids))
    out: dict[str, dict[str, Any]] = {}
    for i in range(0, len(ids), CHUNK_IDS):
        out.update(_summaries(session, ids[i : i + CHUNK_IDS]))
    return out


def _summaries(session: Session, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    batches = {b.id: b for b in session.scalars(select(Batch).where(Batch.id.in_(ids)))}
    for batch_id in ids:
        if batch_id not in batches:
            raise KeyError(batch_id)
    parts: dict[str, list[BatchPart]] = defaultdict(list)
    for p in session.scalars(
        select(BatchPart).where(BatchPart.batch_id.in_(ids)).order_by(BatchPart.id)
    ):
        parts[p.batch_id].append(p)
    planned = _planned(session, ids)
    shards = _shards(session, ids)
    actual = _actual(session, ids)
    usage = batch_usage(session, ids)
    return {
        batch_id: {
            "deadline": _unix(batches[batch_id].deadline),
            "min_quality": batches[batch_id].min_quality,
            "sites": batches[batch_id].sites,
            "priority": batches[batch_id].priority,
            "parts": [
                {
                    "id": p.id,
                    "model": p.model,
                    "min_quality": p.min_quality,
                    "requests": p.requests,
                    "input_tokens": p.input_tokens,
                    "output_tokens": p.output_tokens,
                    "tokens_estimated": p.tokens_estimated,
                }
                for p in parts[batch_id]
            ],
            "planned": planned[batch_id],
            "shards": shards[batch_id],
            **actual[batch_id],
            **usage[batch_id],
        }
        for batch_id in ids
    }


def _planned(session: Session, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Planned figures per batch: every shard at the plan it was cut from, plus what the current
    plan holds that is not cut into shards yet.

    Shards keep their assignment (and so the plan version that placed them) after a re-plan,
    so a finished batch keeps its planned figures beside its booked ones.
    """
    plan_id = session.scalar(
        select(PlanRecord.id)
        .where(PlanRecord.is_current.is_(True))
        .order_by(PlanRecord.id.desc())
        .limit(1)
    )
    cut: dict[int, list[Any]] = {}  # assignment id -> [record, requests in shards]
    for a, n in session.execute(
        select(AssignmentRecord, func.sum(Shard.request_count))
        .join(Shard, Shard.assignment_id == AssignmentRecord.id)
        .where(Shard.batch_id.in_(ids))
        .group_by(AssignmentRecord.id)
    ):
        cut[a.id] = [a, int(n or 0)]
    if plan_id is not None:
        for a in session.scalars(
            select(AssignmentRecord).where(
                AssignmentRecord.plan_id == plan_id, AssignmentRecord.batch_id.in_(ids)
            )
        ):
            cut.setdefault(a.id, [a, a.requests])
    by_batch: dict[str, list[tuple[AssignmentRecord, float, int]]] = defaultdict(list)
    for a, n in cut.values():
        share = n / a.requests if a.requests else 0.0
        by_batch[a.batch_id].append((a, share, n))
    for rows in by_batch.values():
        rows.sort(key=lambda x: (x[0].slot_start, x[0].site, x[0].pool, x[0].id))
    return {batch_id: _planned_one(by_batch[batch_id]) for batch_id in ids}


def _planned_one(rows: list[tuple[AssignmentRecord, float, int]]) -> dict[str, Any]:
    slots = [
        {
            "plan_id": a.plan_id,
            "site": a.site,
            "pool": a.pool,
            "model": a.model,
            "slot_start": _unix(a.slot_start),
            "requests": n,
            "energy_kwh": a.energy_kwh * f,
            "co2_g": a.co2_g * f,
            "water_l": a.water_l * f,
            "cost": a.cost * f,
            "grid_kwh": None if a.grid_kwh is None else a.grid_kwh * f,
            "carbon_g_per_kwh": a.carbon_g_per_kwh,
        }
        for a, f, n in rows
    ]
    plan_ids = sorted({a.plan_id for a, _, _ in rows})
    return {
        "plan_id": plan_ids[-1] if plan_ids else None,
        "plan_ids": plan_ids,
        "estimated": True,
        "sites": sorted({a.site for a, _, _ in rows}),
        "first_slot_at": _unix(min(a.slot_start for a, _, _ in rows)) if rows else None,
        "last_slot_at": _unix(max(a.slot_start for a, _, _ in rows)) if rows else None,
        "requests": sum(n for _, _, n in rows),
        "energy_kwh": sum((a.energy_kwh * f for a, f, _ in rows), 0.0),
        "co2_g": sum((a.co2_g * f for a, f, _ in rows), 0.0),
        "water_l": sum((a.water_l * f for a, f, _ in rows), 0.0),
        "cost": sum((a.cost * f for a, f, _ in rows), 0.0),
        "slots": slots,
    }


def _shards(session: Session, ids: Sequence[str]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {batch_id: {} for batch_id in ids}
    for batch_id, status, n in session.execute(
        select(Shard.batch_id, Shard.status, func.count())
        .where(Shard.batch_id.in_(ids))
        .group_by(Shard.batch_id, Shard.status)
    ):
        out[batch_id][status] = int(n)
    return out


def _actual(session: Session, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    L = LedgerEntry
    totals = {
        row[0]: row[1:]
        for row in session.execute(
            select(
                L.batch_id,
                func.count(),
                func.coalesce(func.sum(L.facility_energy_kwh), 0.0),
                func.coalesce(func.sum(L.it_energy_kwh), 0.0),
                func.coalesce(func.sum(L.co2_location_g), 0.0),
                func.sum(func.coalesce(L.co2_market_g, L.co2_location_g)),
                func.coalesce(func.sum(L.embodied_co2_g), 0.0),
                func.coalesce(func.sum(L.water_onsite_l + L.water_offsite_l), 0.0),
                func.coalesce(func.sum(L.cost), 0.0),
                func.coalesce(func.sum(L.requests_done), 0),
                func.coalesce(func.sum(L.requests_failed), 0),
                func.coalesce(func.sum(L.gpu_hours), 0.0),
            )
            .where(L.batch_id.in_(ids))
            .group_by(L.batch_id)
        )
    }
    methods: dict[str, set[str]] = defaultdict(set)
    sites: dict[str, set[str]] = defaultdict(set)
    for batch_id, method, site in session.execute(
        select(L.batch_id, L.energy_method, L.site).where(L.batch_id.in_(ids)).distinct()
    ):
        methods[batch_id].add(method)
        sites[batch_id].add(site)
    no_entries = (0, 0.0, 0.0, 0.0, None, 0.0, 0.0, 0.0, 0, 0, 0.0)
    out: dict[str, dict[str, Any]] = {}
    for batch_id in ids:
        n, energy, it_energy, co2_loc, co2_market, embodied, water, cost, done, failed, gpu_h = (
            totals.get(batch_id, no_entries)
        )
        out[batch_id] = {
            "energy_method": _energy_method(methods[batch_id]),
            "actual": {
                "entries": int(n),
                "sites": sorted(sites[batch_id]),
                "energy_kwh": float(energy),
                "it_energy_kwh": float(it_energy),
                "co2_g": float(co2_loc) + float(embodied),
                "co2_location_g": float(co2_loc),
                "co2_market_g": None if co2_market is None else float(co2_market),
                "embodied_co2_g": float(embodied),
                "water_l": float(water),
                "cost": float(cost),
                "gpu_hours": float(gpu_h),
                "requests_done": int(done),
                "requests_failed": int(failed),
            },
        }
    return out
