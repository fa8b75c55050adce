"""A store seeded for the operations review: tenants, keys, signals, a planned fleet, shards, ledger.

The plan comes from the real planner when ``scheduler.optimizer.planner.plan_problem`` exists;
otherwise from the contract's ``carbon_greedy`` baseline (also real code), so the assignments
always satisfy the planning contract. Shards and ledger rows follow the execution contract:
past slots ran (ledger rows, some measured, some estimated), the current slot runs, the next
is queued, later slots are planned, and a few assignments are not cut into shards yet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from scheduler.clock import now_utc
from scheduler.domain import (
    Fleet,
    MeasurementMethod,
    ModelSpec,
    Plan,
    PlanningBatch,
    Pool,
    Profile,
    Site,
    SlotSignal,
)
from scheduler.optimizer.pricing import price_problem
from scheduler.optimizer.problem import PlanningProblem
from scheduler.store.tables import (
    AssignmentRecord,
    Batch,
    CarbonPacing,
    File,
    ForecastPoint,
    LedgerEntry,
    PlanRecord,
    Shard,
)
from scheduler.store.tenants import create_api_key
from tests.factories import ledger_entry
from workers.energy.base import Measurement
from workers.ledger import compute_ledger_values

SLOT = timedelta(hours=1)
SITES = ("de-frankfurt", "gb-london", "se-lulea")


@dataclass
class Seeded:
    """What the seed wrote: keys, tenants, ids, and the clock it used."""

    now: datetime
    admin_key: str
    keys: dict[str, str]  # tenant name -> key
    tenant_ids: dict[str, str]  # tenant name -> id
    batch_tenant: dict[str, str]  # batch id -> tenant name
    plan_id: int
    shard_ids: list[str] = field(default_factory=list)
    uncut_assignment_ids: list[int] = field(default_factory=list)
    ledger_ids: list[int] = field(default_factory=list)
    used_planner: bool = False


def seed_fleet() -> Fleet:
    """Three sites with small GPU pools and two models (8B and 70B)."""
    h100 = Profile(gpus=1, prefill_tok_s=30000, decode_tok_s=3500, power_w=550)
    h100_big = Profile(gpus=2, prefill_tok_s=6000, decode_tok_s=900, power_w=600)
    a100 = Profile(gpus=1, prefill_tok_s=12000, decode_tok_s=1600, power_w=330)
    return Fleet(
        slot_minutes=60,
        sites=(
            Site("de-frankfurt", 1.15, 0.4, 1.9, (Pool("h100", "H100", 2, 25.0),)),
            Site(
                "gb-london",
                1.2,
                0.3,
                1.6,
                (Pool("a100", "A100", 2, 18.0),),
                market_factor_g_per_kwh=35.0,
            ),
            Site("se-lulea", 1.08, 0.2, 2.1, (Pool("h100", "H100", 1, 25.0),)),
        ),
        models=(
            ModelSpec("llama-3.1-8b-instruct", 0.69, {"H100": h100, "A100": a100}),
            ModelSpec("llama-3.1-70b-instruct", 0.83, {"H100": h100_big}),
        ),
    )


def _signal(site: str, t: datetime) -> tuple[float, float, float]:
    """Synthetic but plausible carbon (g/kWh), price (per kWh) and solar (kW) of a site-hour."""
    h = t.hour + t.minute / 60.0
    day = max(0.0, math.sin(math.pi * (h - 6.0) / 12.0)) if 6 <= h <= 18 else 0.0
    base = {"de-frankfurt": 380.0, "gb-london": 210.0, "se-lulea": 45.0}[site]
    swing = {"de-frankfurt": 160.0, "gb-london": 90.0, "se-lulea": 15.0}[site]
    evening_peak = math.exp(-((h - 19.0) ** 2) / 6.0)  # gas peakers after sunset
    carbon = base - swing * day + 0.45 * swing * evening_peak + 0.1 * swing * math.sin(h / 3.0)
    price = {"de-frankfurt": 0.14, "gb-london": 0.19, "se-lulea": 0.06}[site] * (
        1.0 + 0.35 * math.sin(math.pi * (h - 8.0) / 12.0)
    )
    solar = {"de-frankfurt": 0.5, "gb-london": 0.3, "se-lulea": 0.1}[site] * day
    return carbon, price, solar


def _plan(problem: PlanningProblem) -> tuple[Plan | None, bool]:
    try:
        from scheduler.optimizer.planner import plan_problem  # type: ignore[import-not-found]
    except ImportError:
        return None, False
    return plan_problem(problem), True


def seed_review_store(sessions: sessionmaker[Session], *, now: datetime | None = None) -> Seeded:
    """Write a coherent review scenario into a migrated store and return its handles."""
    now = now or now_utc()  # gridshift's clock: tests pin it (tests/clock_pin.py)
    slot_now = now.replace(minute=0, second=0, microsecond=0)
    start = slot_now - 14 * SLOT
    slots = tuple(start + i * SLOT for i in range(36))
    fleet = seed_fleet()
    with sessions() as s, s.begin():
        admin_key = create_api_key(s, "ops", admin=True)
        keys = {name: create_api_key(s, name) for name in ("acme", "globex")}
    with sessions() as s, s.begin():
        from scheduler.store.tenants import get_tenant

        tenant_ids = {n: get_tenant(s, n).id for n in ("ops", "acme", "globex")}  # type: ignore[union-attr]
        signals: dict[tuple[str, datetime], SlotSignal] = {}
        fetched = start - timedelta(hours=12)
        for site in SITES:
            for t in slots:
                c, p, r = _signal(site, t)
                signals[(site, t)] = SlotSignal(t, site, c, p, r)
                key = f"{site}|{{}}"
                noise = 1.0 + 0.06 * math.sin(t.hour * 1.7 + len(site))
                s.add_all(
                    [
                        ForecastPoint(
                            provider="synthetic",
                            key=key,
                            signal="carbon",
                            kind="forecast",
                            time=t,
                            value=c * noise,
                            fetched_at=fetched,
                        ),
                        ForecastPoint(
                            provider="synthetic",
                            key=key,
                            signal="price",
                            kind="forecast",
                            time=t,
                            value=p,
                            fetched_at=fetched,
                        ),
                        ForecastPoint(
                            provider="synthetic",
                            key=key,
                            signal="solar",
                            kind="forecast",
                            time=t,
                            value=r,
                            fetched_at=fetched,
                        ),
                    ]
                )
                if t < slot_now:
                    s.add(
                        ForecastPoint(
                            provider="synthetic",
                            key=key,
                            signal="carbon",
                            kind="actual",
                            time=t,
                            value=c,
                            fetched_at=t + SLOT,
                        )
                    )
        specs = [
            # id, tenant, model, requests, input tokens, output tokens, sites, submitted h, deadline h
            (
                "batch_nightly_summaries",
                "acme",
                "llama-3.1-8b-instruct",
                1200,
                9.0e6,
                2.6e7,
                None,
                2,
                12,
            ),
            (
                "batch_embed_backfill",
                "acme",
                "llama-3.1-8b-instruct",
                800,
                6.0e6,
                1.4e7,
                ("de-frankfurt", "gb-london"),
                1,
                9,
            ),
            ("batch_eval_70b", "globex", "llama-3.1-70b-instruct", 300, 1.5e6, 2.5e6, None, 2, 12),
            (
                "batch_translate",
                "globex",
                "llama-3.1-8b-instruct",
                600,
                4.0e6,
                1.1e7,
                ("gb-london",),
                4,
                16,
            ),
            ("batch_support_tags", "acme", "llama-3.1-8b-instruct", 900, 5.0e6, 1.6e7, None, 9, 20),
            (
                "batch_contracts_70b",
                "globex",
                "llama-3.1-70b-instruct",
                250,
                1.2e6,
                2.0e6,
                ("de-frankfurt",),
                11,
                24,
            ),
            (
                "batch_weekly_digest",
                "acme",
                "llama-3.1-8b-instruct",
                1500,
                1.0e7,
                3.0e7,
                None,
                13,
                34,
            ),
            (
                "batch_urgent_alerts",
                "globex",
                "llama-3.1-8b-instruct",
                200,
                1.0e6,
                3.0e6,
                None,
                13,
                15,
            ),
        ]
        batches: list[PlanningBatch] = []
        for i, (bid, tenant, model, n, inp, out, sites, sub_h, due_h) in enumerate(specs):
            submitted = start + timedelta(hours=sub_h, minutes=5 + 7 * i)
            deadline = start + timedelta(hours=due_h)
            s.add(
                File(
                    id=f"file_{bid}",
                    tenant_id=tenant_ids[tenant],
                    filename=f"{bid}.jsonl",
                    purpose="batch",
                    bytes=1,
                    sha256="0" * 64,
                    path="/dev/null",
                    created_at=int(submitted.timestamp()),
                )
            )
            s.flush()
            s.add(
                Batch(
                    id=bid,
                    tenant_id=tenant_ids[tenant],
                    endpoint="/v1/chat/completions",
                    input_file_id=f"file_{bid}",
                    completion_window="24h",
                    status="in_progress",
                    created_at=int(submitted.timestamp()),
                    in_progress_at=int(submitted.timestamp()) + 5,
                    request_total=n,
                    deadline=deadline,
                    model=model,
                    sites=list(sites) if sites else None,
                )
            )
            batches.append(
                PlanningBatch(
                    bid, n, inp, out, submitted, deadline, model=model, sites=sites, tenant=tenant
                )
            )
        s.flush()
        problem = PlanningProblem(fleet=fleet, slots=slots, signals=signals, batches=tuple(batches))
        plan, used_planner = _plan(problem)
        if plan is None:
            from scheduler.optimizer.baselines import baseline_assignments, compute_baselines

            assignments, _ = baseline_assignments(problem, "carbon_greedy")
            baselines = {k: _baseline_dict(v) for k, v in compute_baselines(problem).items()}
            totals: dict[str, Any] = {}
            status = "feasible"
        else:
            assignments = list(plan.assignments)
            baselines = {k: _baseline_dict(v) for k, v in plan.baselines.items()}
            totals = {
                k: getattr(plan.totals, k)
                for k in ("co2_g", "cost", "water_l", "energy_kwh", "delay_h")
            }
            status = plan.status.value
        records = []
        for a, priced in zip(assignments, price_problem(problem, assignments), strict=True):
            records.append(
                AssignmentRecord(
                    batch_id=a.batch,
                    part_id=f"{a.batch}:0",
                    site=a.site,
                    pool=a.pool,
                    model=a.model,
                    slot_start=a.slot,
                    requests=a.requests,
                    input_tokens=a.input_tokens,
                    output_tokens=a.output_tokens,
                    gpu_hours=a.gpu_hours,
                    energy_kwh=a.energy_kwh,
                    co2_g=priced.co2_g,
                    cost=priced.cost,
                    water_l=priced.water_l,
                    carbon_g_per_kwh=priced.carbon_g_per_kwh,
                )
            )
        if not totals:
            totals = {
                "co2_g": sum(x.co2_g for x in records),
                "cost": sum(x.cost for x in records),
                "water_l": sum(x.water_l for x in records),
                "energy_kwh": sum(x.energy_kwh for x in records),
                "delay_h": 0.0,
            }
        plan_row = PlanRecord(
            created_at=start + timedelta(minutes=40),
            trigger="new_batches",
            status=status,
            objectives=["carbon", "cost", "delay"],
            tolerances=[0.01, 0.0, 0.0],
            totals=totals,
            baselines=baselines,
            unplaced=[],
            stage_optima=None,
            notes=None,
            solve_s=0.2,
            horizon_start=slots[0],
            horizon_end=slots[-1] + SLOT,
            is_current=True,
        )
        older = PlanRecord(
            created_at=start + timedelta(minutes=10),
            trigger="new_batches",
            status="optimal",
            objectives=["carbon", "cost", "delay"],
            tolerances=[0.01, 0.0, 0.0],
            totals={**totals, "co2_g": totals["co2_g"] * 1.04},
            baselines=baselines,
            unplaced=[],
            stage_optima=None,
            notes=None,
            solve_s=0.1,
            horizon_start=slots[0],
            horizon_end=slots[-1] + SLOT,
            is_current=False,
        )
        s.add_all([older, plan_row])
        s.flush()
        for rec in records:
            rec.plan_id = plan_row.id
        s.add_all(records)
        s.flush()
        seeded = Seeded(
            now=now,
            admin_key=admin_key,
            keys=keys,
            tenant_ids=tenant_ids,
            batch_tenant={b[0]: b[1] for b in specs},
            plan_id=plan_row.id,
            used_planner=used_planner,
        )
        _cut_and_run(s, fleet, records, slot_now, seeded, tenant_ids)
        day = slot_now.date().isoformat()
        s.add(
            CarbonPacing(
                scope="fleet",
                day=day,
                budget_g=6000.0,
                spent_g=0.0,
                price_per_g=0.0004,
                updated_at=now,
            )
        )
    return seeded


def _baseline_dict(b: Any) -> dict[str, Any]:
    return {
        k: getattr(b, k) for k in ("co2_g", "cost", "water_l", "delay_h", "unplaced", "caps_broken")
    }


def _cut_and_run(
    s: Session,
    fleet: Fleet,
    records: list[AssignmentRecord],
    slot_now: datetime,
    seeded: Seeded,
    tenant_ids: dict[str, str],
) -> None:
    later = [r for r in records if r.slot_start > slot_now + SLOT]
    uncut = {r.id for r in later[len(later) // 2 :]}  # the far future is not cut yet
    failed_once = False
    # the earliest slot after the current one that holds work is queued (whatever the hour of
    # the day makes the plan leave empty, the seed always has a queued shard)
    next_slot = min(
        (r.slot_start for r in records if r.slot_start > slot_now and r.id not in uncut),
        default=None,
    )
    for n, rec in enumerate(sorted(records, key=lambda r: (r.slot_start, r.id))):
        if rec.id in uncut:
            seeded.uncut_assignment_ids.append(rec.id)
            continue
        parts = 2 if rec.requests >= 2 and rec.gpu_hours > 0.6 else 1
        for k in range(parts):
            req = rec.requests // parts + (rec.requests % parts if k == 0 else 0)
            frac = req / rec.requests
            sid = f"shard_{rec.id}_{k}"
            if rec.slot_start + SLOT <= slot_now:
                status = "done"
            elif rec.slot_start <= slot_now:
                status = "running"
            elif rec.slot_start == next_slot:
                status = "queued"
            else:
                status = "planned"
            if status == "done" and not failed_once and k == 1:
                status, failed_once = "failed", True
            run_min = min(27.0, max(8.0, 60.0 * rec.gpu_hours * frac))
            started = (
                rec.slot_start + timedelta(minutes=2 + 29 * k)
                if status in ("done", "failed", "running")
                else None
            )
            dur = timedelta(minutes=run_min)
            finished = started + dur if started and status in ("done", "failed") else None
            shard = Shard(
                id=sid,
                batch_id=rec.batch_id,
                part_id=rec.part_id,
                plan_id=rec.plan_id,
                assignment_id=rec.id,
                site=rec.site,
                pool=rec.pool,
                model=rec.model,
                slot_start=rec.slot_start,
                status=status,
                request_count=req,
                attempts=1 if started else 0,
                created_at=rec.slot_start - timedelta(hours=2),
                queued_at=started,
                started_at=started,
                finished_at=finished,
                requests_done=req if status == "done" else 0,
                requests_failed=req if status == "failed" else 0,
                planned_energy_kwh=rec.energy_kwh * frac,
                planned_co2_g=rec.co2_g * frac,
                last_error="engine exited (seeded failure)" if status == "failed" else None,
            )
            s.add(shard)
            seeded.shard_ids.append(sid)
            if status in ("done", "failed") and started and finished:
                s.flush()
                seeded.ledger_ids.append(
                    _ledger(s, fleet, rec, shard, frac, n, tenant_ids, seeded).id
                )


def _ledger(
    s: Session,
    fleet: Fleet,
    rec: AssignmentRecord,
    shard: Shard,
    frac: float,
    n: int,
    tenant_ids: dict[str, str],
    seeded: Seeded,
) -> LedgerEntry:
    site = fleet.site(rec.site)
    measured = rec.site != "gb-london"
    it = rec.energy_kwh / site.pue * frac * (0.93 + 0.02 * (n % 5))
    c, p, r = _signal(rec.site, rec.slot_start)
    assert shard.started_at and shard.finished_at
    method = MeasurementMethod.MEASURED_NVML if measured else MeasurementMethod.ESTIMATED
    duration_s = (shard.finished_at - shard.started_at).total_seconds()
    v = compute_ledger_values(
        Measurement(it, duration_s, method),
        site=site,
        pool=site.pool(rec.pool),
        gpus_per_replica=1,
        signal=SlotSignal(rec.slot_start, rec.site, c, p, r),
        carbon_source="actual",
        renewable_allowance_kwh=r * 0.5,
        gpu_hours=rec.gpu_hours * frac,
    )
    row = ledger_entry(
        v,
        batch_id=rec.batch_id,
        shard_id=shard.id,
        attempt=1,
        tenant_id=tenant_ids[seeded.batch_tenant[rec.batch_id]],
        site=rec.site,
        pool=rec.pool,
        model=rec.model,
        started_at=shard.started_at,
        ended_at=shard.finished_at,
        requests_done=shard.requests_done,
        requests_failed=shard.requests_failed,
        input_tokens=int(rec.input_tokens * frac),
        output_tokens=int(rec.output_tokens * frac),
        planned_energy_kwh=rec.energy_kwh * frac,
        planned_co2_g=rec.co2_g * frac,
        planned_water_l=rec.water_l * frac,
        planned_cost=rec.cost * frac,
        created_at=shard.finished_at,
    )
    s.add(row)
    s.flush()
    return row
