"""Replay a night hour by hour with the service's re-planning decision, then price it on actuals.

At each step ``h`` the backtest knows only the forecast issues published by ``h``
(``Vintages.known_at``) and the batches submitted by ``h``; it re-plans everything not yet run
with ``scheduler.dispatch.replan.solve_checked`` (the function every service re-plan calls),
commits the work of the slots that start before the next step, and goes on. The actuals are
read only after the replay, to price what ran and the reference strategies:

- ``bound``: the perfect-knowledge plan (every batch known in advance, planned on the actuals);
- ``rolling_known``: the same re-planning on the same issues, every batch known in advance
  (windows still hold), so ``rolling - rolling_known`` is what arrivals cost and
  ``rolling_known - bound`` what forecast error costs;
- ``first_vintage``: one plan at the start on the first issue, every batch known in advance;
- ``asap`` and ``carbon_greedy``: the contract's baselines on the actuals.

Regret is a strategy's CO2 above the bound's, relative to the bound's.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from scheduler.contract import build_problem, format_time
from scheduler.contract.vintages import Vintages
from scheduler.dispatch.replan import solve_checked
from scheduler.domain import (
    Assignment,
    Fleet,
    Objective,
    Plan,
    PlanningBatch,
    PlanStatus,
    PlanTotals,
    SlotSignal,
    Unplaced,
)
from scheduler.errors import InvalidInput
from scheduler.optimizer.arrivals import ArrivalProfile
from scheduler.optimizer.planner import plan_problem
from scheduler.optimizer.problem import FixedLoad
from scheduler.optimizer.validate import ValidationReport, price, validate_plan

Signals = Mapping[tuple[str, datetime], SlotSignal]


@dataclass(frozen=True, slots=True)
class Decision:
    """One step of the replay: when, on which issue, what it saw and what it committed."""

    at: datetime
    vintage: datetime | None
    batches_known: int
    committed: int  # assignments committed at this step


@dataclass(slots=True)
class BacktestResult:
    """The committed plan, its check on the actuals and every strategy's priced totals."""

    committed: Plan
    validation: ValidationReport
    strategies: dict[str, dict[str, float]]
    decisions: list[Decision] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """``result.json``: strategies with regret, the check and the decisions."""
        return {
            "strategies": self.strategies,
            "committed_check": {
                "ok": self.validation.ok,
                "violations": self.validation.violations,
            },
            "decisions": [
                {
                    "at": format_time(d.at),
                    "vintage": format_time(d.vintage) if d.vintage else None,
                    "batches_known": d.batches_known,
                    "committed": d.committed,
                }
                for d in self.decisions
            ],
        }


def _remaining(batch: PlanningBatch, done: Sequence[Assignment]) -> PlanningBatch | None:
    """What is left of ``batch`` after the committed ``done`` pieces (None when finished)."""
    requests = batch.requests - sum(a.requests for a in done)
    if requests <= 0:
        return None
    return dataclasses.replace(
        batch,
        requests=requests,
        input_tokens=max(0.0, batch.input_tokens - sum(a.input_tokens for a in done)),
        output_tokens=max(0.0, batch.output_tokens - sum(a.output_tokens for a in done)),
    )


def _horizon(known: Signals, fleet: Fleet, start: datetime, end: datetime) -> list[datetime]:
    """The slots from ``start`` (before ``end``) for which every site has a known value."""
    step = timedelta(minutes=fleet.slot_minutes)
    out: list[datetime] = []
    t = start
    while t < end and all((s.name, t) in known for s in fleet.sites):
        out.append(t)
        t += step
    return out


def _solve_at(
    fleet: Fleet,
    at: datetime,
    first: datetime,
    end: datetime,
    vintages: Vintages,
    open_now: Sequence[PlanningBatch],
    fixed: Sequence[FixedLoad],
    objectives: Sequence[Objective] | None,
    tolerances: Sequence[float] | None,
    time_limit_s: float,
    reserved: tuple[PlanningBatch, ...] = (),
) -> Plan:
    """One re-plan at ``at`` of ``open_now`` over the slots from ``first``, on issues known then.

    The slot in progress is not offered to a batch submitted inside it (the contract's window
    rule: a piece starts at or after ``submitted_at``, so the committed plan re-prices and
    checks offline); the batches known before it may still take its free capacity.
    """
    known = {k: sig for k, (_, sig) in vintages.known_at(at).items()}
    slots = _horizon(known, fleet, first, end)
    if not slots:
        raise InvalidInput(
            f"no forecast issued by {format_time(at)} covers every site at "
            f"{format_time(first)}; add an earlier issue or start the backtest later"
        )
    inside = set(slots)
    problem = build_problem(
        fleet,
        slots,
        {k: known[k] for k in known if k[1] in inside},
        open_now,
        objectives,
        tolerances,
        time_limit_s=time_limit_s,
        fixed=tuple(fixed),
    )
    problem = dataclasses.replace(problem, reserved=reserved)
    return solve_checked(problem, lambda p: plan_problem(p, baselines=False))


def _as_fixed(pieces: Sequence[Assignment]) -> list[FixedLoad]:
    """Committed pieces as the fixed loads a later re-plan of the same slots must respect."""
    acc: dict[tuple[str, str, datetime], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for a in pieces:
        acc[(a.site, a.pool, a.slot)][0] += a.gpu_hours
        acc[(a.site, a.pool, a.slot)][1] += a.energy_kwh
    return [FixedLoad(k[0], k[1], k[2], v[0], v[1]) for k, v in acc.items()]


def replay(
    fleet: Fleet,
    batches: Sequence[PlanningBatch],
    vintages: Vintages,
    start: datetime,
    end: datetime,
    *,
    objectives: Sequence[Objective] | None = None,
    tolerances: Sequence[float] | None = None,
    step_slots: int = 1,
    time_limit_s: float = 60.0,
    known_in_advance: bool = False,
    progress: Callable[[int, int], None] | None = None,
    arrivals: ArrivalProfile | None = None,
    history: Sequence[PlanningBatch] = (),
) -> tuple[list[Assignment], list[Decision]]:
    """Re-plan at every step from ``start`` to ``end``; return what ran and each decision.

    At each step boundary ``h`` it re-plans every open batch over the slots from ``h`` and
    commits the pieces of the slots before the next step. Batches submitted during a step are
    planned when they arrive, as the service's ``new_batch`` re-plan does: one re-plan at the
    step's last submission, over the slots from the one it falls in, around the work already
    committed there (fixed loads). Uses neither actuals nor any batch submitted after a
    decision's time for that decision. With ``known_in_advance`` every batch is known from the
    start (its window still holds): the reference that separates arrivals from forecast error.

    Raises:
        InvalidInput: a step at which no issue covers the first slot, or a bad batch.
    """
    slot = timedelta(minutes=fleet.slot_minutes)
    step = slot * step_slots
    steps = int((end - start) / step)
    done: dict[str, list[Assignment]] = defaultdict(list)
    committed: list[Assignment] = []
    decisions: list[Decision] = []

    def open_at(at: datetime) -> list[PlanningBatch]:
        return [
            r
            for b in batches
            if (known_in_advance or b.submitted_at <= at) and b.deadline > at
            for r in [_remaining(b, done[b.id])]
            if r is not None
        ]

    def decide(at: datetime, first: datetime, until: datetime) -> None:
        open_now = open_at(at)
        n_new = 0
        if open_now:
            reserved: tuple[PlanningBatch, ...] = ()
            if arrivals is not None and not known_in_advance:
                seen = [*history, *(b for b in batches if b.submitted_at < at)]
                reserved = arrivals.reserve(seen, at, end, fleet.slot_minutes)
            fixed = _as_fixed([a for a in committed if first <= a.slot < until])
            plan = _solve_at(
                fleet, at, first, end, vintages, open_now, fixed,
                objectives, tolerances, time_limit_s, reserved,
            )  # fmt: skip
            for a in plan.assignments:
                if a.slot < until:
                    done[a.batch].append(a)
                    committed.append(a)
                    n_new += 1
        decisions.append(Decision(at, vintages.vintage_at(at), len(open_now), n_new))

    for i in range(steps):
        h = start + i * step
        if progress is not None:
            progress(i, steps)
        decide(h, h, h + step)
        submitted = [] if known_in_advance else [
            b.submitted_at for b in batches if h < b.submitted_at < h + step
        ]  # fmt: skip
        if submitted:
            at = max(submitted)
            decide(at, start + ((at - start) // slot) * slot, h + step)
    if progress is not None:
        progress(steps, steps)
    return committed, decisions


def _figures(totals: PlanTotals | Any, unplaced: int) -> dict[str, float]:
    return {
        "co2_g": float(totals.co2_g),
        "cost": float(totals.cost),
        "water_l": float(totals.water_l),
        "delay_h": float(totals.delay_h),
        "unplaced": float(unplaced),
    }


def backtest(
    fleet: Fleet,
    batches: Sequence[PlanningBatch],
    vintages: Vintages,
    actual_slots: Sequence[datetime],
    actuals: Signals,
    *,
    objectives: Sequence[Objective] | None = None,
    tolerances: Sequence[float] | None = None,
    step_slots: int = 1,
    time_limit_s: float = 60.0,
    progress: Callable[[int, int], None] | None = None,
    arrivals: ArrivalProfile | None = None,
    history: Sequence[PlanningBatch] = (),
) -> BacktestResult:
    """Replay over the actuals' span, then price the committed plan and the references.

    With ``arrivals`` every re-plan also reserves capacity for the batches expected later
    (learned from ``history`` and the batches submitted so far, as the service does), and the
    result adds ``rolling_no_reservations``: the same replay without them.

    Raises:
        InvalidInput: as ``replay``, or batches the actual horizon cannot hold.
    """
    start = max(actual_slots[0], vintages.issue_times[0]) if vintages.issue_times else None
    if start is None:
        raise InvalidInput("the vintages file has no issue")
    end = actual_slots[-1] + timedelta(minutes=fleet.slot_minutes)
    run = functools.partial(
        replay,
        fleet,
        batches,
        vintages,
        start,
        end,
        objectives=objectives,
        tolerances=tolerances,
        step_slots=step_slots,
        time_limit_s=time_limit_s,
        history=history,
    )
    committed, decisions = run(progress=progress, arrivals=arrivals)
    slots = [t for t in actual_slots if t >= start]
    real = build_problem(
        fleet,
        slots,
        actuals,
        list(batches),
        objectives,
        tolerances,
        time_limit_s=time_limit_s,
    )
    ran = {a.batch for a in committed}
    missed = missed_batches(batches, committed)
    totals = price(real, committed).totals
    plan = Plan(
        status=PlanStatus.FEASIBLE,
        objectives=real.objectives,
        tolerances=real.tolerances,
        totals=totals,
        assignments=tuple(sorted(committed, key=lambda a: (a.slot, a.batch, a.site, a.pool))),
        unplaced=tuple(
            Unplaced(b.id, "not run by its deadline in the replay")
            for b in missed
            if b.id not in ran
        ),
        notes=(f"backtest: {len(decisions)} re-plans, committed work priced on the actuals",),
    )
    bound = plan_problem(real, baselines=True)
    known, _ = run(known_in_advance=True)
    first = _first_vintage(
        fleet, batches, vintages, start, end, objectives, tolerances, time_limit_s
    )
    strategies = {
        "rolling": _figures(totals, len(missed)),
        "bound": _figures(bound.totals, len(bound.unplaced)),
        "rolling_known": _figures(price(real, known).totals, len(missed_batches(batches, known))),
        "first_vintage": _figures(price(real, first.assignments).totals, len(first.unplaced)),
    }
    if arrivals is not None:
        bare, _ = run()
        strategies["rolling_no_reservations"] = _figures(
            price(real, bare).totals, len(missed_batches(batches, bare))
        )
    for name, b in bound.baselines.items():
        strategies[name] = _figures(b, b.unplaced)
    best = strategies["bound"]["co2_g"]
    for fig in strategies.values():
        fig["regret_co2"] = (fig["co2_g"] - best) / best if best else 0.0
    return BacktestResult(plan, validate_plan(real, plan), strategies, decisions)


def missed_batches(
    batches: Sequence[PlanningBatch], ran: Sequence[Assignment]
) -> list[PlanningBatch]:
    """The batches whose requests did not all run."""
    placed: dict[str, int] = defaultdict(int)
    for a in ran:
        placed[a.batch] += a.requests
    return [b for b in batches if placed[b.id] < b.requests]


def _first_vintage(
    fleet: Fleet,
    batches: Sequence[PlanningBatch],
    vintages: Vintages,
    start: datetime,
    end: datetime,
    objectives: Sequence[Objective] | None,
    tolerances: Sequence[float] | None,
    time_limit_s: float,
) -> Plan:
    """One plan at ``start`` on the issues known then, every batch known in advance."""
    known = {k: sig for k, (_, sig) in vintages.known_at(start).items()}
    slots = _horizon(known, fleet, start, end)
    inside = set(slots)
    signals = {k: known[k] for k in known if k[1] in inside}
    problem = build_problem(
        fleet, slots, signals, list(batches), objectives, tolerances, time_limit_s=time_limit_s
    )
    return plan_problem(problem, baselines=False)
