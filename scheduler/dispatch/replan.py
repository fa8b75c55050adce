"""Service re-planning: the store's unleased work -> ``PlanningProblem`` -> a new current plan."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import Settings
from scheduler.dispatch.budget import (
    BudgetStates,
    advance_pacer,
    budget_states,
    carbon_cap,
    defer_parts,
    quality_ceilings,
)
from scheduler.dispatch.shards import (
    create_shards,
    release_planned_shards,
    unleased_request_ids,
)
from scheduler.dispatch.signals import HorizonSignals
from scheduler.dispatch.slots import slot_floor, slot_fraction_left, slots_between
from scheduler.domain import BatchStatus, Fleet, Plan, PlanningBatch, ShardStatus, SlotSignal
from scheduler.optimizer.attribution import BatchFigures, baseline_by_batch, sum_figures
from scheduler.optimizer.baselines import BASELINES
from scheduler.optimizer.pricing import PricedPiece, price_problem
from scheduler.optimizer.problem import FixedLoad, PlanningProblem
from scheduler.store.db import transaction
from scheduler.store.tables import (
    AssignmentRecord,
    Batch,
    BatchPart,
    PlanRecord,
    Shard,
)

log = logging.getLogger(__name__)

Planner = Callable[[PlanningProblem], Plan]


def default_planner(problem: PlanningProblem) -> Plan:
    """``scheduler.optimizer.planner.plan_problem`` with baselines (imported lazily)."""
    from scheduler.optimizer.planner import plan_problem

    plan: Plan = plan_problem(problem, baselines=True)
    return plan


def default_horizon_signals(settings: Settings, factory: sessionmaker[Session]) -> HorizonSignals:
    """Signals from the forecasts service (cached in ``forecast_points``, with its fallbacks)."""

    def collect(
        fleet: Fleet, slots: tuple[datetime, ...], now: datetime
    ) -> Mapping[tuple[str, datetime], SlotSignal]:
        from scheduler.forecasts.cache import SqlForecastCache
        from scheduler.forecasts.service import collect_signals

        result = collect_signals(
            fleet, slots, cache=SqlForecastCache(factory), settings=settings, now=now
        )
        return result.signals

    return collect


def _part_batches(
    s: Session, fleet: Fleet, now: datetime
) -> tuple[list[PlanningBatch], dict[str, list[int]]]:
    """Planning batches of unleased requests of in-progress batches, tokens pro rata."""
    rows = s.execute(
        select(BatchPart, Batch)
        .join(Batch, Batch.id == BatchPart.batch_id)
        .where(Batch.status == BatchStatus.IN_PROGRESS.value, Batch.deadline > now)
        .order_by(Batch.created_at, BatchPart.id)
    ).all()
    out: list[PlanningBatch] = []
    free: dict[str, list[int]] = {}
    for part, batch in rows:
        ids = unleased_request_ids(s, part.id)
        if not ids:
            continue
        free[part.id] = ids
        share = len(ids) / part.requests if part.requests else 1.0
        submitted = min(datetime.fromtimestamp(batch.created_at, UTC), now)
        out.append(
            PlanningBatch(
                id=part.id,
                requests=len(ids),
                input_tokens=part.input_tokens * share,
                output_tokens=part.output_tokens * share,
                submitted_at=submitted,
                deadline=batch.deadline,
                model=part.model,
                min_quality=part.min_quality if part.model is None else None,
                sites=tuple(batch.sites) if batch.sites else None,
                priority=batch.priority,
                tenant=batch.tenant_id,
                tokens_estimated=part.tokens_estimated,
            )
        )
    return out, free


def _fixed_loads(s: Session, fleet: Fleet, now: datetime) -> tuple[FixedLoad, ...]:
    """Queued and running shards, at their slot (or the current slot if it is past)."""
    current = slot_floor(now, fleet.slot_minutes)
    rows = s.execute(
        select(Shard.site, Shard.pool, Shard.slot_start, Shard.request_count, AssignmentRecord)
        .join(AssignmentRecord, AssignmentRecord.id == Shard.assignment_id)
        .where(Shard.status.in_([ShardStatus.QUEUED.value, ShardStatus.RUNNING.value]))
    ).all()
    acc: dict[tuple[str, str, datetime], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for site, pool, slot, n, a in rows:
        share = n / a.requests if a.requests else 0.0
        key = (site, pool, max(slot, current))
        acc[key][0] += a.gpu_hours * share
        acc[key][1] += a.energy_kwh * share
    return tuple(
        FixedLoad(site=k[0], pool=k[1], slot=k[2], gpu_hours=v[0], facility_kwh=v[1])
        for k, v in acc.items()
    )


def price_assignments(problem: PlanningProblem, plan: Plan) -> list[PricedPiece]:
    """Planned figures of each assignment (``scheduler.optimizer.pricing``, the one rule)."""
    return price_problem(problem, plan.assignments)


def baselines_with_batches(
    problem: PlanningProblem, plan: Plan, part_batch: Mapping[str, str]
) -> dict[str, dict[str, object]]:
    """The plan's baseline totals, each with its per-batch figures under ``"batches"``.

    ``"batches"`` maps an OpenAI batch id to ``{co2_g, cost, water_l, delay_h, energy_kwh}``,
    summing the planning parts ``"{batch_id}~{model}"`` of that batch.

    Per-batch figures share each site-slot's grid energy by facility energy
    (``scheduler.optimizer.attribution``), so they add up to the plan-wide baseline totals.
    """
    out: dict[str, dict[str, object]] = {}
    for name, b in plan.baselines.items():
        row: dict[str, object] = {k: getattr(b, k) for k in b.__dataclass_fields__}
        out[name] = row
        if name not in BASELINES:
            continue
        grouped: dict[str, list[BatchFigures]] = defaultdict(list)
        for part, fig in baseline_by_batch(problem, name).items():
            grouped[part_batch.get(part, part.split("~", 1)[0])].append(fig)
        row["batches"] = {bid: sum_figures(figs).as_dict() for bid, figs in grouped.items()}
    return out


def build_problem(
    s: Session,
    settings: Settings,
    fleet: Fleet,
    now: datetime,
    signals_for: HorizonSignals,
    states: BudgetStates | None = None,
) -> tuple[PlanningProblem | None, dict[str, list[int]], list[dict[str, str]]]:
    """The planning problem of everything not yet leased, or None when there is nothing.

    Budget states (``states``, default: read from the store) cap the model tier of
    ``"auto"`` parts through ``max_quality_by_batch`` and, at CRITICAL, defer those whose
    deadline is after the horizon (``scheduler.dispatch.budget.defer_parts``).

    Returns:
        ``(problem, free, deferred)`` where ``free[part_id]`` lists the unleased request ids in
        order and ``deferred`` the held-back parts as ``unplaced`` records.
    """
    batches, free = _part_batches(s, fleet, now)
    if not batches:
        return None, free, []
    states = states if states is not None else budget_states(s, fleet, now)
    slots = slots_between(now, now + timedelta(hours=settings.horizon_hours), fleet.slot_minutes)
    horizon_end = slots[-1] + timedelta(minutes=fleet.slot_minutes)
    batches, deferred = defer_parts(batches, states, horizon_end)
    signals = signals_for(fleet, slots, now)
    cap, price = carbon_cap(s, fleet, now, horizon_end)
    problem = PlanningProblem(
        fleet=fleet,
        slots=slots,
        signals=signals,
        batches=tuple(batches),
        objectives=fleet.default_objectives,
        tolerances=fleet.default_tolerances,
        carbon_cap_g=cap,
        carbon_price_per_g=price,
        fixed=_fixed_loads(s, fleet, now),
        slot_available={slots[0]: slot_fraction_left(now, fleet.slot_minutes)},
        time_limit_s=settings.plan_time_limit_s,
        max_quality_by_batch=quality_ceilings(batches, states, fleet),
    )
    return problem, free, deferred


def replan(
    factory: sessionmaker[Session],
    settings: Settings,
    fleet: Fleet,
    now: datetime,
    *,
    trigger: str,
    signals_for: HorizonSignals | None = None,
    planner: Planner | None = None,
) -> int | None:
    """Plan all unleased work again and make the result the current plan.

    Builds the problem from the store (see ``build_problem``), solves it, stores a new
    ``plans`` row (``is_current``; the previous one is retired) with its assignments and their
    planned figures, and replaces the PLANNED shards of the batches concerned with shards cut
    from the new assignments. Queued, running and done shards are fixed loads: never moved.

    Args:
        factory: session factory.
        settings: horizon, shard bounds, solver time limit.
        fleet: the fleet.
        now: the dispatcher's clock.
        trigger: why (``new_batch``, ``slot_boundary``, ``manual``...), stored on the plan.
        signals_for: horizon signals (default: forecasts service, synthetic fallback).
        planner: the solver (default ``plan_problem``).

    Returns:
        The new plan's id, or None when nothing needed planning.

    Raises:
        PlanningError: the planner failed.
    """
    signals_for = signals_for or default_horizon_signals(settings, factory)
    planner = planner or default_planner
    advance_pacer(factory, fleet, now)
    with factory() as s:
        states = budget_states(s, fleet, now)
        problem, free, deferred = build_problem(s, settings, fleet, now, signals_for, states)
    if problem is None:
        return None
    plan = planner(problem)
    priced = price_assignments(problem, plan)
    part_batch = {p.id: p.id.split("~", 1)[0] for p in problem.batches}
    with transaction(factory) as s:
        s.execute(
            update(PlanRecord).where(PlanRecord.is_current.is_(True)).values(is_current=False)
        )
        record = PlanRecord(
            created_at=now,
            trigger=trigger,
            status=str(plan.status),
            objectives=[str(o) for o in plan.objectives],
            tolerances=list(plan.tolerances),
            totals={k: getattr(plan.totals, k) for k in plan.totals.__dataclass_fields__},
            baselines=baselines_with_batches(problem, plan, part_batch),
            unplaced=[{"batch": u.batch, "reason": u.reason} for u in plan.unplaced] + deferred,
            stage_optima=dict(plan.stage_optima),
            notes=list(plan.notes) + states.notes(),
            solve_s=plan.solve_s,
            fallback_signals=plan.fallback_signals
            or any(sig.fallback for sig in problem.signals.values()),
            horizon_start=problem.slots[0],
            horizon_end=problem.horizon_end,
            is_current=True,
        )
        s.add(record)
        s.flush()
        held = {d["batch"].split("~", 1)[0] for d in deferred}
        release_planned_shards(s, sorted(set(part_batch.values()) | held))
        ordered = sorted(
            zip(plan.assignments, priced, strict=True),
            key=lambda x: (x[0].slot, x[0].site, x[0].pool),
        )
        cursor: dict[str, int] = defaultdict(int)
        for a, price in ordered:
            sig = problem.signals.get((a.site, a.slot))
            ids = unleased_request_ids(s, a.batch) if a.batch not in free else free[a.batch]
            take = ids[cursor[a.batch] : cursor[a.batch] + a.requests]
            cursor[a.batch] += a.requests
            row = AssignmentRecord(
                plan_id=record.id,
                batch_id=part_batch.get(a.batch, a.batch.split("~", 1)[0]),
                part_id=a.batch,
                site=a.site,
                pool=a.pool,
                model=a.model,
                slot_start=a.slot,
                requests=a.requests,
                input_tokens=a.input_tokens,
                output_tokens=a.output_tokens,
                gpu_hours=a.gpu_hours,
                energy_kwh=a.energy_kwh,
                co2_g=price.co2_g,
                cost=price.cost,
                water_l=price.water_l,
                carbon_g_per_kwh=sig.carbon_g_per_kwh if sig is not None else None,
                renewable_kwh=price.renewable_kwh,
                grid_kwh=price.grid_kwh,
                price_per_kwh=sig.price_per_kwh if sig is not None else None,
                renewable_kw=sig.renewable_kw if sig is not None else None,
                wue_l_per_kwh=sig.wue_l_per_kwh if sig is not None else None,
                carbon_factor=sig.carbon_factor if sig is not None else None,
            )
            s.add(row)
            s.flush()
            create_shards(
                s,
                row,
                take,
                max_requests=settings.max_shard_requests,
                max_gpu_minutes=settings.max_shard_gpu_minutes,
                now=now,
            )
        plan_id = record.id
    log.info(
        "plan %d (%s): %d assignments, %d unplaced, status %s",
        plan_id,
        trigger,
        len(plan.assignments),
        len(plan.unplaced),
        plan.status,
    )
    return plan_id


def replan_trigger(s: Session, fleet: Fleet, now: datetime) -> str | None:
    """Why the tick should re-plan now, or None.

    ``new_batch``: an in-progress batch has a part that no shard and no current plan knows
    (a part in the plan's ``unplaced``, e.g. deferred by the carbon budget, is known).
    ``slot_boundary``: the current slot differs from the one the current plan started in and
    some work is still unleased.
    """
    current = s.scalars(select(PlanRecord).where(PlanRecord.is_current.is_(True))).first()
    known: set[str] = set()
    if current is not None:
        known |= set(
            s.scalars(
                select(AssignmentRecord.part_id).where(AssignmentRecord.plan_id == current.id)
            )
        )
        known |= {u.get("batch") for u in (current.unplaced or [])}
    parts = s.scalars(
        select(BatchPart.id)
        .join(Batch, Batch.id == BatchPart.batch_id)
        .where(Batch.status == BatchStatus.IN_PROGRESS.value, Batch.deadline > now)
    ).all()
    if parts:
        known |= set(s.scalars(select(Shard.part_id).where(Shard.part_id.in_(parts)).distinct()))
    if any(p not in known for p in parts):
        return "new_batch"
    if current is not None and current.horizon_start != slot_floor(now, fleet.slot_minutes):
        for p in parts:
            if unleased_request_ids(s, p):
                return "slot_boundary"
    return None
