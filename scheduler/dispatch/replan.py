"""Service re-planning: the store's unleased work -> ``PlanningProblem`` -> a new current plan."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import Settings
from scheduler.dispatch.budget import (
    BudgetStates,
    advance_pacer,
    budget_states,
    carbon_caps,
    defer_parts,
    quality_ceilings,
)
from scheduler.dispatch.budget_notes import after_placement_notes, planned_today_g
from scheduler.dispatch.expected import expected_arrivals
from scheduler.dispatch.plan_write import (
    ShardLimits,
    compact_assignments,
    load_free,
    write_assignments,
    write_lock,
)
from scheduler.dispatch.signals import HorizonSignals, scope2_signals, signal_notes
from scheduler.domain import (
    Assignment,
    BatchStatus,
    Fleet,
    Plan,
    PlanningBatch,
    ShardStatus,
    SlotSignal,
)
from scheduler.optimizer.attribution import BatchFigures, baseline_by_batch, sum_figures
from scheduler.optimizer.baselines import BASELINES
from scheduler.optimizer.coverage import check_coverage
from scheduler.optimizer.duals import rows_json
from scheduler.optimizer.pricing import PricedPiece, price_problem
from scheduler.optimizer.problem import FixedLoad, PlanningProblem, WarmCell
from scheduler.slots import slot_floor, slot_fraction_left, slots_between
from scheduler.store.db import transaction
from scheduler.store.part_rows import part_rows, planning_batch
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
    s: Session, fleet: Fleet, now: datetime, *, exclude: set[str] | None = None
) -> tuple[list[PlanningBatch], dict[str, list[int]]]:
    """Planning batches of the free requests of in-progress batches, tokens pro rata.

    The free requests of all parts come from one query (``plan_write.load_free``), the parts
    from another (columns, not ORM objects). ``exclude``: parts to leave out (the fast path's
    parts the current plan already holds).
    """
    free = load_free(s, now)
    rows = s.execute(
        part_rows()
        .where(Batch.status == BatchStatus.IN_PROGRESS.value, Batch.deadline > now)
        .order_by(Batch.created_at, BatchPart.id)
    ).all()
    out: list[PlanningBatch] = []
    for r in rows:
        ids = free.get(r.id)
        if not ids or (exclude is not None and r.id in exclude):
            continue
        submitted = min(datetime.fromtimestamp(r.created_at, UTC), now)
        out.append(planning_batch(r, requests=len(ids), submitted_at=submitted))
    return out, free


def _fixed_loads(
    s: Session, fleet: Fleet, now: datetime, *, all_planned: bool = False
) -> tuple[FixedLoad, ...]:
    """Queued, running and due planned shards, at their slot (or the current slot if past).

    A planned shard whose slot has started is the tick's to queue: re-plans leave it alone.
    With ``all_planned`` every planned shard counts (the fast path keeps the current plan).
    """
    current = slot_floor(now, fleet.slot_minutes)
    rows = s.execute(
        select(
            Shard.site,
            Shard.pool,
            Shard.slot_start,
            Shard.request_count,
            AssignmentRecord.requests,
            AssignmentRecord.gpu_hours,
            AssignmentRecord.energy_kwh,
        )
        .join(AssignmentRecord, AssignmentRecord.id == Shard.assignment_id)
        .where(
            or_(
                Shard.status.in_([ShardStatus.QUEUED.value, ShardStatus.RUNNING.value]),
                and_(Shard.status == ShardStatus.PLANNED.value, Shard.slot_start <= now)
                if not all_planned
                else Shard.status == ShardStatus.PLANNED.value,
            )
        )
    ).all()
    acc: dict[tuple[str, str, datetime], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for site, pool, slot, n, a_requests, a_gpu_hours, a_energy_kwh in rows:
        share = n / a_requests if a_requests else 0.0
        key = (site, pool, max(slot, current))
        acc[key][0] += a_gpu_hours * share
        acc[key][1] += a_energy_kwh * share
    return tuple(
        FixedLoad(site=k[0], pool=k[1], slot=k[2], gpu_hours=v[0], facility_kwh=v[1])
        for k, v in acc.items()
    )


def price_assignments(problem: PlanningProblem, plan: Plan) -> list[PricedPiece]:
    """Planned figures of each assignment (``scheduler.pricing``, the one rule), in the ledger's
    factor type: a site whose signal is marginal or lifecycle is priced at the average direct
    factor booking uses for scope 2 (``scope2_signals``), so planned and booked CO2 compare one
    factor type (deviations, a batch's planned against booked, queued work in the budget cap).
    The plan's totals stay the solver's, on the signals it steered by."""
    signals = scope2_signals(problem.fleet, problem.signals)
    return price_problem(replace(problem, signals=signals), plan.assignments)


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


def _calibrated(s: Session, fleet: Fleet) -> Fleet:
    """The fleet with the profiles workers measured (``GRIDSHIFT_CALIBRATED_PROFILES``)."""
    from scheduler.optimizer.calibration import calibrated_fleet, calibrations
    from scheduler.store.profiles import observed_profiles

    return calibrated_fleet(fleet, calibrations(fleet, observed_profiles(s, fleet)))


def build_problem(
    s: Session,
    settings: Settings,
    fleet: Fleet,
    now: datetime,
    signals_for: HorizonSignals,
    states: BudgetStates | None = None,
    *,
    exclude: set[str] | None = None,
) -> tuple[PlanningProblem | None, dict[str, list[int]], list[dict[str, str]]]:
    """The planning problem of everything not yet leased, or None when there is nothing.

    With ``exclude`` (the fast path: the parts the current plan holds), those parts are left
    out and every planned shard counts as fixed load.

    Budget states (``states``, default: read from the store) cap the model tier of
    ``"auto"`` parts through ``max_quality_by_batch`` and, at CRITICAL, defer those whose
    deadline is after the horizon (``scheduler.dispatch.budget.defer_parts``).

    Returns:
        ``(problem, free, deferred)`` where ``free[part_id]`` lists the unleased request ids in
        order and ``deferred`` the held-back parts as ``unplaced`` records.
    """
    batches, free = _part_batches(s, fleet, now, exclude=exclude)
    if not batches:
        return None, free, []
    if settings.calibrated_profiles:
        fleet = _calibrated(s, fleet)
    states = states if states is not None else budget_states(s, fleet, now)
    slots = slots_between(now, now + timedelta(hours=settings.horizon_hours), fleet.slot_minutes)
    horizon_end = slots[-1] + timedelta(minutes=fleet.slot_minutes)
    batches, deferred = defer_parts(batches, states, horizon_end)
    signals = signals_for(fleet, slots, now)
    caps, price = carbon_caps(s, fleet, now, horizon_end)
    problem = PlanningProblem(
        fleet=fleet,
        slots=slots,
        signals=signals,
        batches=tuple(batches),
        objectives=fleet.default_objectives,
        tolerances=fleet.default_tolerances,
        carbon_cap_by_day_g=caps or {},
        cap_carbon_g_per_kwh=_booked_factors(fleet, signals) if caps else {},
        carbon_price_per_g=price,
        fixed=_fixed_loads(s, fleet, now, all_planned=exclude is not None),
        slot_available={slots[0]: slot_fraction_left(now, fleet.slot_minutes)},
        time_limit_s=settings.plan_time_limit_s,
        total_time_limit_s=settings.plan_budget_s,
        max_quality_by_batch=quality_ceilings(batches, states, fleet),
        reserved=expected_arrivals(s, settings, now, horizon_end, fleet.slot_minutes),
    )
    return problem, free, deferred


def _booked_factors(
    fleet: Fleet, signals: Mapping[tuple[str, datetime], SlotSignal]
) -> dict[tuple[str, datetime], float]:
    """The average direct factor booking charges to the budget, where a signal is marginal or
    lifecycle (``scope2_signals``): the grid factor of the plan's carbon cap rows."""
    booked = scope2_signals(fleet, signals)
    return {
        k: b.carbon_g_per_kwh
        for k, b in booked.items()
        if b.carbon_g_per_kwh != signals[k].carbon_g_per_kwh
    }


def current_cells(s: Session) -> tuple[WarmCell, ...]:
    """The ``(part, site, pool, model, slot)`` cells of the plan in force (a warm start)."""
    rows = s.execute(
        select(
            AssignmentRecord.part_id,
            AssignmentRecord.site,
            AssignmentRecord.pool,
            AssignmentRecord.model,
            AssignmentRecord.slot_start,
        )
        .join(PlanRecord, PlanRecord.id == AssignmentRecord.plan_id)
        .where(PlanRecord.is_current.is_(True))
    ).all()
    return tuple(
        (part, site, pool, model, t if t.tzinfo else t.replace(tzinfo=UTC))
        for part, site, pool, model, t in rows
    )


def _assignment_row(
    problem: PlanningProblem,
    plan_id: int,
    a: Assignment,
    price: PricedPiece,
    part_batch: Mapping[str, str],
) -> dict[str, object]:
    """The ``assignments`` row of one placement, with its planned figures and signals."""
    sig = problem.signals.get((a.site, a.slot))
    return {
        "plan_id": plan_id,
        "batch_id": part_batch.get(a.batch, a.batch.split("~", 1)[0]),
        "part_id": a.batch,
        "site": a.site,
        "pool": a.pool,
        "model": a.model,
        "slot_start": a.slot,
        "requests": a.requests,
        "input_tokens": a.input_tokens,
        "output_tokens": a.output_tokens,
        "gpu_hours": a.gpu_hours,
        "energy_kwh": a.energy_kwh,
        "co2_g": price.co2_g,
        "cost": price.cost,
        "water_l": price.water_l,
        "carbon_g_per_kwh": sig.carbon_g_per_kwh if sig is not None else None,
        "renewable_kwh": price.renewable_kwh,
        "grid_kwh": price.grid_kwh,
        "price_per_kwh": sig.price_per_kwh if sig is not None else None,
        "renewable_kw": sig.renewable_kw if sig is not None else None,
        "wue_l_per_kwh": sig.wue_l_per_kwh if sig is not None else None,
        "carbon_factor": sig.carbon_factor if sig is not None else None,
        "signal_issued_at": sig.issued_at if sig is not None else None,
        "signal_provider": sig.carbon_provider if sig is not None else None,
        "signal_synthetic": sig.synthetic if sig is not None else None,
        "signal_fallback_reason": sig.fallback_reason if sig is not None else None,
    }


def solve_checked(problem: PlanningProblem, planner: Planner | None = None) -> Plan:
    """Solve ``problem`` and accept the answer only if every batch is planned or unplaced.

    This is the whole decision of a re-plan, free of the store: ``build_problem`` makes the
    problem from the store state, the clock and the signals; this solves and checks it. A
    backtest replays the service by calling the same two functions.

    Raises:
        PlanningError: the planner failed, or its answer would lose a batch
            (``scheduler.optimizer.coverage``).
    """
    plan = (planner or default_planner)(problem)
    check_coverage(problem, plan)
    return plan


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
    """Plan all free work again and make the result the current plan.

    Builds the problem from the store (see ``build_problem``), solves and checks it
    (``solve_checked``), then stores a new ``plans`` row (``is_current``; the previous one is
    retired) with its assignments, and brings the PLANNED, not yet due shards in line with it
    (``plan_write.write_assignments``: parts whose placement did not change keep their shards).
    Queued, running, done and due shards are fixed loads: never moved. Assignments of plans
    superseded more than ``plan_retention_h`` ago are compacted in the same transaction.

    Args:
        factory: session factory.
        settings: horizon, shard bounds, solver time limit and total planning budget.
        fleet: the fleet.
        now: the planner's clock.
        trigger: why (``new_batch``, ``slot_boundary``, ``manual``...), stored on the plan.
        signals_for: horizon signals (default: forecasts service, synthetic fallback).
        planner: the solver (default ``plan_problem``).

    Returns:
        The new plan's id, or None when nothing needed planning.

    Raises:
        PlanningError: the planner failed or its answer broke the invariant; nothing was
            written and the current plan stays in force.
    """
    signals_for = signals_for or default_horizon_signals(settings, factory)
    t0 = time.perf_counter()
    advance_pacer(factory, fleet, now)
    with factory() as s:
        states = budget_states(s, fleet, now)
        problem, free, deferred = build_problem(s, settings, fleet, now, signals_for, states)
        if problem is not None:
            problem = replace(problem, warm_cells=current_cells(s))
    if problem is None:
        return None
    t1 = time.perf_counter()
    plan = solve_checked(problem, planner)
    t2 = time.perf_counter()
    priced = price_assignments(problem, plan)
    part_batch = {p.id: p.id.split("~", 1)[0] for p in problem.batches}
    baselines = baselines_with_batches(problem, plan, part_batch)
    limits = ShardLimits(settings.max_shard_requests, settings.max_shard_gpu_minutes)
    t3 = time.perf_counter()
    with transaction(factory) as s:
        write_lock(s)
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
            baselines=baselines,
            unplaced=[{"batch": u.batch, "reason": u.reason} for u in plan.unplaced] + deferred,
            stage_optima=dict(plan.stage_optima),
            notes=list(plan.notes)
            + states.notes()
            + after_placement_notes(
                s, fleet, now, states, planned_today_g(plan.assignments, priced, now)
            )
            + signal_notes(problem.signals),
            duals=rows_json(plan.duals),
            solve_s=plan.solve_s,
            fallback_signals=plan.fallback_signals
            or any(sig.fallback for sig in problem.signals.values()),
            horizon_start=problem.slots[0],
            horizon_end=problem.horizon_end,
            is_current=True,
        )
        s.add(record)
        s.flush()
        rows = [
            _assignment_row(problem, record.id, a, price, part_batch)
            for a, price in zip(plan.assignments, priced, strict=True)
        ]
        # parts that arrived during the solve (the fast path may have placed them) stay as they are
        stats = write_assignments(s, rows, free, now=now, limits=limits, only=set(free))
        record.notes = [*(record.notes or []), stats.note()]
        compacted = compact_assignments(s, now, settings.plan_retention_h)
        plan_id = record.id
    t4 = time.perf_counter()
    log.info(
        "plan %d (%s): %d assignments, %d unplaced, status %s; build %.2fs, solve %.2fs "
        "(with baselines), pricing %.2fs, store %.2fs; %s; %d old assignments compacted",
        plan_id,
        trigger,
        len(plan.assignments),
        len(plan.unplaced),
        plan.status,
        t1 - t0,
        t2 - t1,
        t3 - t2,
        t4 - t3,
        stats.note(),
        compacted,
    )
    return plan_id
