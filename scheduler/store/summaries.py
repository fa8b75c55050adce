"""Per-batch summary of plan and outcome: the ``gridshift`` field of a batch object.

``planned`` comes from the current plan's assignments (estimates by construction); ``actual``
from the ledger (measured or estimated, as each entry says). Before anything is planned or run
the figures are zeros and the lists empty.
"""

from __future__ import annotations

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
    batch = session.get(Batch, batch_id)
    if batch is None:
        raise KeyError(batch_id)
    parts = session.scalars(
        select(BatchPart).where(BatchPart.batch_id == batch_id).order_by(BatchPart.id)
    ).all()
    return {
        "deadline": _unix(batch.deadline),
        "min_quality": batch.min_quality,
        "sites": batch.sites,
        "priority": batch.priority,
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
            for p in parts
        ],
        "planned": _planned(session, batch_id),
        "shards": _shards(session, batch_id),
        **_actual(session, batch_id),
    }


def _planned(session: Session, batch_id: str) -> dict[str, Any]:
    plan_id = session.scalar(
        select(PlanRecord.id)
        .where(PlanRecord.is_current.is_(True))
        .order_by(PlanRecord.id.desc())
        .limit(1)
    )
    rows = (
        session.scalars(
            select(AssignmentRecord)
            .where(AssignmentRecord.plan_id == plan_id, AssignmentRecord.batch_id == batch_id)
            .order_by(AssignmentRecord.slot_start, AssignmentRecord.site, AssignmentRecord.pool)
        ).all()
        if plan_id is not None
        else []
    )
    slots = [
        {
            "site": a.site,
            "pool": a.pool,
            "model": a.model,
            "slot_start": _unix(a.slot_start),
            "requests": a.requests,
            "energy_kwh": a.energy_kwh,
            "co2_g": a.co2_g,
            "water_l": a.water_l,
            "cost": a.cost,
            "carbon_g_per_kwh": a.carbon_g_per_kwh,
        }
        for a in rows
    ]
    return {
        "plan_id": plan_id if rows else None,
        "estimated": True,
        "sites": sorted({a.site for a in rows}),
        "first_slot_at": slots[0]["slot_start"] if slots else None,
        "last_slot_at": slots[-1]["slot_start"] if slots else None,
        "requests": sum(a.requests for a in rows),
        "energy_kwh": sum((a.energy_kwh for a in rows), 0.0),
        "co2_g": sum((a.co2_g for a in rows), 0.0),
        "water_l": sum((a.water_l for a in rows), 0.0),
        "cost": sum((a.cost for a in rows), 0.0),
        "slots": slots,
    }


def _shards(session: Session, batch_id: str) -> dict[str, int]:
    rows = session.execute(
        select(Shard.status, func.count()).where(Shard.batch_id == batch_id).group_by(Shard.status)
    ).all()
    return {status: int(n) for status, n in rows}


def _actual(session: Session, batch_id: str) -> dict[str, Any]:
    L = LedgerEntry
    totals = session.execute(
        select(
            func.count(),
            func.coalesce(func.sum(L.facility_energy_kwh), 0.0),
            func.coalesce(func.sum(L.it_energy_kwh), 0.0),
            func.coalesce(func.sum(L.co2_location_g), 0.0),
            func.sum(L.co2_market_g),
            func.coalesce(func.sum(L.embodied_co2_g), 0.0),
            func.coalesce(func.sum(L.water_onsite_l + L.water_offsite_l), 0.0),
            func.coalesce(func.sum(L.cost), 0.0),
            func.coalesce(func.sum(L.requests_done), 0),
            func.coalesce(func.sum(L.requests_failed), 0),
            func.coalesce(func.sum(L.gpu_hours), 0.0),
        ).where(L.batch_id == batch_id)
    ).one()
    n, energy, it_energy, co2_loc, co2_market, embodied, water, cost, done, failed, gpu_h = totals
    methods = set(
        session.scalars(select(L.energy_method).where(L.batch_id == batch_id).distinct()).all()
    )
    sites = sorted(set(session.scalars(select(L.site).where(L.batch_id == batch_id).distinct())))
    return {
        "energy_method": _energy_method(methods),
        "actual": {
            "entries": int(n),
            "sites": sites,
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
