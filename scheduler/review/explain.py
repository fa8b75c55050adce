"""Why here and why now: a batch's placement in words and figures, for operators.

For each batch the explanation sets the carbon intensity its work got beside running at once
(the submission slot, at the same site and at the cleanest allowed site), names the next-best
option it did not take (site and slot, with the CO2 that option would have cost on the same
energy) and what limited it, checked in this order against the plan's own inputs:

- ``residency``: a site outside the batch's ``sites`` was cleaner inside the window;
- ``deadline``: an allowed site was cleaner in a slot after the deadline;
- ``capacity``: a cleaner allowed option inside the window had its pool full in the plan;
- ``water cap`` / ``budget``: the plan's notes say a cap or a budget state bound it;
- ``none``: it runs in the cleanest allowed slot (on-site solar counted).

Residency and deadline are checked first on the signals the plan used (the forecast cache):
the LP has no rows for them (cells outside a window or the allowed sites are never built).
Then, where the plan kept its LP duals (``plans.duals``), the batch did not get its cleanest
allowed slot, and a binding capacity, water-cap or budget row touches its chosen cells or its
next-best option, that row is the answer (``dual_reason.py``; ``basis`` is ``lp-duals``; after
a residency or deadline answer it is added as "within its allowed sites and window").
Otherwise (no duals touched; plans made before duals were kept, or by a backend or stage
without them) the remaining checks run on the signals and stored assignments, and ``basis``
says so.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from scheduler.domain import Fleet
from scheduler.review.dual_reason import DUALS_BASIS, dual_reason
from scheduler.review.signals import site_signals
from scheduler.review.units import si
from scheduler.store.tables import AssignmentRecord, Batch, PlanRecord

BASIS = (
    "computed from the signals the plan used and its stored assignments (this plan has no "
    "stored LP duals: made before they were kept, or by a backend or stage without them); "
    "intensities are grid carbon, CO2 figures ESTIMATED"
)
#: ``basis`` when the plan has duals but none of the rows they bind touches the batch.
BASIS_DUALS_SILENT = (
    "computed from the signals the plan used and its stored assignments (the LP's duals name "
    "no binding capacity, water or budget row on its cells; deadline and residency have no LP "
    "rows); intensities are grid carbon, CO2 figures ESTIMATED"
)


class Option(BaseModel):
    """A (site, slot) option with its grid carbon intensity and the CO2 on the batch's energy."""

    site: str
    slot_start: datetime
    carbon_g_per_kwh: float
    co2_g: float


class Explanation(BaseModel):
    """The answer of ``GET /v1/batches/{id}/explain``."""

    batch_id: str
    plan_id: int | None
    submitted_at: datetime
    deadline: datetime
    allowed_sites: list[str]
    chosen: list[Option]
    got_g_per_kwh: float | None
    net_of_solar_g_per_kwh: float | None
    at_once_here_g_per_kwh: float | None
    at_once_best: Option | None
    next_best: Option | None
    limited_by: str
    because: str
    summary: str
    basis: str = BASIS


def _slot(t: datetime, minutes: int) -> datetime:
    t = t.astimezone(UTC)
    return t.replace(minute=t.minute - t.minute % minutes, second=0, microsecond=0)


def explain_batch(session: Session, fleet: Fleet, batch: Batch) -> Explanation:
    """Explain where and when ``batch`` runs in the latest plan that placed it."""
    plan_id = session.scalar(
        select(AssignmentRecord.plan_id)
        .where(AssignmentRecord.batch_id == batch.id)
        .order_by(AssignmentRecord.plan_id.desc())
        .limit(1)
    )
    rows = (
        session.scalars(
            select(AssignmentRecord).where(
                AssignmentRecord.batch_id == batch.id, AssignmentRecord.plan_id == plan_id
            )
        ).all()
        if plan_id is not None
        else []
    )
    plan = session.get(PlanRecord, plan_id) if plan_id is not None else None
    step = timedelta(minutes=fleet.slot_minutes)
    submitted = datetime.fromtimestamp(batch.created_at, UTC)
    deadline = batch.deadline if batch.deadline.tzinfo else batch.deadline.replace(tzinfo=UTC)
    first = _slot(submitted, fleet.slot_minutes)
    all_sites = [s.name for s in fleet.sites]
    allowed = list(batch.sites or all_sites)
    horizon_end = max(deadline + timedelta(hours=24), first + step)
    carbon: dict[tuple[str, datetime], float] = {}
    solar_kw: dict[tuple[str, datetime], float] = {}
    for series in site_signals(session, all_sites, first, horizon_end):
        for p in series.points:
            if p.carbon_g_per_kwh is not None:
                carbon[(series.site, p.time.astimezone(UTC))] = p.carbon_g_per_kwh
            solar_kw[(series.site, p.time.astimezone(UTC))] = p.renewable_kw or 0.0
    energy = sum(a.energy_kwh for a in rows)
    slot_h = step.total_seconds() / 3600
    # grid intensity the work got, weighted by energy; the on-site solar share taken off
    grid_g = sum(a.energy_kwh * (a.carbon_g_per_kwh or 0.0) for a in rows)
    net_g = sum(
        a.energy_kwh
        * (a.carbon_g_per_kwh or 0.0)
        * (
            1
            - min(
                1.0,
                solar_kw.get((a.site, a.slot_start.astimezone(UTC)), 0.0)
                * slot_h
                / max(a.energy_kwh, 1e-12),
            )
        )
        for a in rows
    )

    def option(site: str, slot: datetime) -> Option:
        c = carbon[(site, slot)]
        return Option(site=site, slot_start=slot, carbon_g_per_kwh=c, co2_g=energy * c)

    def best(
        sites: list[str], lo: datetime, hi: datetime, skip: set[tuple[str, datetime]]
    ) -> Option | None:
        keys = [k for k in carbon if k[0] in sites and lo <= k[1] < hi and k not in skip]
        return option(*min(keys, key=lambda k: carbon[k])) if keys else None

    chosen = [
        option(a.site, a.slot_start.astimezone(UTC))
        for a in rows
        if (a.site, a.slot_start.astimezone(UTC)) in carbon
    ]
    taken = {(o.site, o.slot_start) for o in chosen}
    got = grid_g / energy if energy > 0 else None
    effective = net_g / energy if energy > 0 else None  # on-site solar counted
    here = chosen[0].site if chosen else (allowed[0] if allowed else None)
    at_once_here = carbon.get((here, first)) if here else None
    at_once_best = best(allowed, first, first + step, set())
    next_best = best(allowed, first, deadline, taken)
    limited_by, because = "none", "it runs in the cleanest allowed slot before its deadline"
    outside = best([s for s in all_sites if s not in allowed], first, deadline, set())
    later = best(allowed, deadline, horizon_end, set())
    worst_got = effective if chosen else None
    notes = " ".join(plan.notes or []) if plan is not None and plan.notes else ""
    basis = BASIS if plan is None or plan.duals is None else BASIS_DUALS_SILENT
    cleanest = best(allowed, first, deadline, set())
    # a batch wholly in its cleanest allowed slot was not limited, whatever binds there
    moved = got is not None and cleanest is not None and got > cleanest.carbon_g_per_kwh + 1e-9
    from_duals = dual_reason(
        plan.duals if plan is not None and moved else None,
        [(a.site, a.pool, a.slot_start.astimezone(UTC)) for a in rows],
        (next_best.site, next_best.slot_start) if next_best is not None else None,
    )
    if not rows:
        limited_by, because = "unplaced", "no plan placed it (yet)"
    elif outside is not None and worst_got is not None and outside.carbon_g_per_kwh < worst_got:
        limited_by = "residency"
        because = (
            f"its data may only go to {', '.join(allowed)}; {outside.site} was cleaner at "
            f"{outside.carbon_g_per_kwh:.0f} g/kWh ({outside.slot_start:%a %H:%M} UTC)"
        )
    elif later is not None and worst_got is not None and later.carbon_g_per_kwh < worst_got:
        limited_by = "deadline"
        because = (
            f"a cleaner hour came after its deadline: {later.site} {later.slot_start:%a %H:%M} "
            f"UTC at {later.carbon_g_per_kwh:.0f} g/kWh"
        )
    elif from_duals is not None:
        (limited_by, because), basis = from_duals, DUALS_BASIS
    elif "water" in notes.lower():
        limited_by, because = "water cap", "the plan notes a binding water cap"
    elif "budget state" in notes.lower() and "normal" not in notes.lower():
        limited_by, because = "budget", "the carbon budget's state restricted the models it may use"
    elif next_best is not None and worst_got is not None and next_best.carbon_g_per_kwh < worst_got:
        if _pool_full(session, fleet, plan_id, next_best.site, next_best.slot_start):
            limited_by = "capacity"
            because = (
                f"the cleaner {next_best.site} {next_best.slot_start:%a %H:%M} UTC slot was full"
            )
        else:
            limited_by = "tolerance"
            because = "a cheaper or earlier option within the carbon objective's tolerance won"
    if limited_by in ("residency", "deadline") and from_duals is not None:
        # no LP row prices these (their cells are never built); within them, the duals speak
        because += f"; within its allowed sites and window, {from_duals[1]}"
    if limited_by == "none" and effective is not None and got is not None and effective < got:
        because += (
            f"; on-site solar covers {100 * (1 - effective / got):.0f} % of its energy "
            f"({effective:.0f} g/kWh net of it)"
        )
    summary = _summary(batch.id, chosen, got, at_once_here, next_best, limited_by, because)
    return Explanation(
        batch_id=batch.id,
        plan_id=plan_id,
        submitted_at=submitted,
        deadline=deadline,
        allowed_sites=allowed,
        chosen=chosen,
        got_g_per_kwh=got,
        net_of_solar_g_per_kwh=effective,
        at_once_here_g_per_kwh=at_once_here,
        at_once_best=at_once_best,
        next_best=next_best,
        limited_by=limited_by,
        because=because,
        summary=summary,
        basis=basis,
    )


def _pool_full(
    session: Session, fleet: Fleet, plan_id: int | None, site: str, slot: datetime
) -> bool:
    """Whether every pool of ``site`` is (almost) full in ``slot`` in the plan."""
    if plan_id is None:
        return False
    used: dict[str, float] = defaultdict(float)
    for pool, gpu_h in session.execute(
        select(AssignmentRecord.pool, AssignmentRecord.gpu_hours).where(
            AssignmentRecord.plan_id == plan_id,
            AssignmentRecord.site == site,
            AssignmentRecord.slot_start == slot,
        )
    ).all():
        used[pool] += gpu_h
    hours = fleet.slot_minutes / 60
    return all(used[p.name] >= 0.99 * p.count * hours for p in fleet.site(site).pools)


def _summary(
    batch_id: str,
    chosen: list[Option],
    got: float | None,
    at_once: float | None,
    next_best: Option | None,
    limited_by: str,
    because: str,
) -> str:
    if not chosen:
        return f"{batch_id} is not placed: {because}."
    where = ", ".join(f"{o.site} {o.slot_start:%a %H:%M}" for o in chosen[:3])
    text = f"Runs at {where} UTC"
    if got is not None and at_once is not None:
        text += f" at {got:.0f} g/kWh against {at_once:.0f} g/kWh had it run at once"
    if next_best is not None:
        text += (
            f"; the next-best option, {next_best.site} {next_best.slot_start:%a %H:%M} UTC at "
            f"{next_best.carbon_g_per_kwh:.0f} g/kWh, would have emitted about "
            f"{si(next_best.co2_g, 'g')} on the same energy"
        )
    return f"{text}. Limited by {limited_by}: {because}."
