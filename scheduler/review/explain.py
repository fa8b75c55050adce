"""Why here and why now: a batch's placement in words and figures, for operators.

For each batch the explanation sets the carbon intensity its work got beside running at once
(the submission slot, at the same site and at the cleanest allowed site), names the next-best
option it did not take (site and slot, with the CO2 that option would have cost on the same
energy) and what limited it, checked in this order against the plan's own inputs:

- ``residency``: it runs in its cleanest allowed slot, and a site outside the batch's ``sites``
  was cleaner inside the window;
- ``deadline``: it runs in its cleanest allowed slot, and an allowed site was cleaner in a slot
  after the deadline (never when a cleaner allowed option inside the window was passed over:
  then that option's reason is the answer, so the explanation never contradicts its figures);
- ``capacity``: a cleaner allowed option inside the window had its pool full in the plan;
- ``water cap`` / ``budget``: the plan's notes say a cap or a budget state bound it;
- ``none``: it runs in the cleanest allowed slot (on-site solar counted).

Residency and deadline are checked first on the signals the plan used (the forecast cache):
the LP has no rows for them (cells outside a window or the allowed sites are never built).
Then, where the plan kept its LP duals (``plans.duals``), the batch did not get its cleanest
allowed slot, and a binding capacity, water-cap or budget row touches its chosen cells or its
next-best option, that row is the answer (``dual_reason.py``; ``basis`` is ``lp-duals``).
Otherwise (no duals touched; plans made before duals were kept, or by a backend or stage
without them) the remaining checks run on the signals and stored assignments, and ``basis``
says so.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
    """A (site, slot) option with its grid carbon intensity and CO2: for a chosen cell the CO2
    the plan priced for the batch's share there; for any other option the batch's energy at
    that intensity (a what-if, as if the whole batch ran there)."""

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
    # the service's slot rule (slots of more than 60 minutes floor the hour too)
    from scheduler.slots import slot_floor

    return slot_floor(t.astimezone(UTC), minutes)


@dataclass
class _Signals:
    """The grid carbon (and on-site solar) the plan saw per (site, slot), and the batch's energy."""

    carbon: dict[tuple[str, datetime], float]
    solar_kw: dict[tuple[str, datetime], float]
    energy_kwh: float

    def option(self, site: str, slot: datetime) -> Option:
        """``site`` at ``slot`` with the CO2 of the batch's energy there."""
        c = self.carbon[(site, slot)]
        return Option(site=site, slot_start=slot, carbon_g_per_kwh=c, co2_g=self.energy_kwh * c)

    def best(
        self,
        sites: list[str],
        lo: datetime,
        hi: datetime,
        skip: frozenset[tuple[str, datetime]] = frozenset(),
    ) -> Option | None:
        """The cleanest option of ``sites`` in ``[lo, hi)`` outside ``skip``."""
        keys = [k for k in self.carbon if k[0] in sites and lo <= k[1] < hi and k not in skip]
        return self.option(*min(keys, key=lambda k: self.carbon[k])) if keys else None


@dataclass(frozen=True)
class _Limit:
    """What the limit decision reads: the options around the batch and what the plan says."""

    placed: bool
    allowed: tuple[str, ...]
    moved: bool  # a cleaner allowed option inside the window existed than what it got
    worst_got: float | None
    outside: Option | None  # the cleanest option at a site the batch may not use
    later: Option | None  # the cleanest allowed option after the deadline
    next_best: Option | None
    from_duals: tuple[str, str] | None
    notes: str


def _limit(x: _Limit, pool_full: Callable[[Option], bool]) -> tuple[str, str] | None:
    """(limited_by, because) in the module docstring's order; None: not limited.

    Residency and deadline are THE limit only for work already in its cleanest allowed slot
    inside its window: when a cleaner allowed option inside the window existed (``moved``),
    what kept it from there was something else (capacity, a cap, the tolerance), never these.
    """
    cleaner = x.worst_got
    if not x.placed:
        return "unplaced", "no plan placed it (yet)"
    if not x.moved and x.outside and cleaner is not None and x.outside.carbon_g_per_kwh < cleaner:
        o = x.outside
        return "residency", (
            f"its data may only go to {', '.join(x.allowed)}; {o.site} was cleaner at "
            f"{o.carbon_g_per_kwh:.0f} g/kWh ({o.slot_start:%a %H:%M} UTC)"
        )
    if not x.moved and x.later and cleaner is not None and x.later.carbon_g_per_kwh < cleaner:
        o = x.later
        return "deadline", (
            f"a cleaner hour came after its deadline: {o.site} {o.slot_start:%a %H:%M} "
            f"UTC at {o.carbon_g_per_kwh:.0f} g/kWh"
        )
    if x.from_duals is not None:
        return x.from_duals
    if "water" in x.notes.lower():
        return "water cap", "the plan notes a binding water cap"
    if "budget state" in x.notes.lower() and "normal" not in x.notes.lower():
        return "budget", "the carbon budget's state restricted the models it may use"
    nb = x.next_best
    if nb is not None and cleaner is not None and nb.carbon_g_per_kwh < cleaner:
        if pool_full(nb):
            return "capacity", f"the cleaner {nb.site} {nb.slot_start:%a %H:%M} UTC slot was full"
        return (
            "tolerance",
            "a cheaper or earlier option within the carbon objective's tolerance won",
        )
    return None


def _placement(
    session: Session, batch_id: str
) -> tuple[int | None, Sequence[AssignmentRecord], PlanRecord | None]:
    """The latest plan that placed ``batch_id``, its assignment rows there, and the plan."""
    plan_id = session.scalar(
        select(AssignmentRecord.plan_id)
        .where(AssignmentRecord.batch_id == batch_id)
        .order_by(AssignmentRecord.plan_id.desc())
        .limit(1)
    )
    if plan_id is None:
        return None, [], None
    rows = session.scalars(
        select(AssignmentRecord).where(
            AssignmentRecord.batch_id == batch_id, AssignmentRecord.plan_id == plan_id
        )
    ).all()
    return plan_id, rows, session.get(PlanRecord, plan_id)


def _signals(
    session: Session, sites: list[str], lo: datetime, hi: datetime, energy_kwh: float
) -> _Signals:
    """The signals the plan used (the forecast cache) for ``sites`` over ``[lo, hi)``."""
    carbon: dict[tuple[str, datetime], float] = {}
    solar_kw: dict[tuple[str, datetime], float] = {}
    for series in site_signals(session, sites, lo, hi):
        for p in series.points:
            if p.carbon_g_per_kwh is not None:
                carbon[(series.site, p.time.astimezone(UTC))] = p.carbon_g_per_kwh
            solar_kw[(series.site, p.time.astimezone(UTC))] = p.renewable_kw or 0.0
    return _Signals(carbon, solar_kw, energy_kwh)


def _intensity_got(
    rows: Sequence[AssignmentRecord], solar_kw: dict[tuple[str, datetime], float], slot_h: float
) -> tuple[float | None, float | None]:
    """Grid intensity the work got, energy-weighted, and the same net of on-site solar."""
    energy = sum(a.energy_kwh for a in rows)
    if energy <= 0:
        return None, None
    grid_g = net_g = 0.0
    for a in rows:
        g = a.energy_kwh * (a.carbon_g_per_kwh or 0.0)
        solar_kwh = solar_kw.get((a.site, a.slot_start.astimezone(UTC)), 0.0) * slot_h
        grid_g += g
        net_g += g * (1 - min(1.0, solar_kwh / max(a.energy_kwh, 1e-12)))
    return grid_g / energy, net_g / energy


def explain_batch(session: Session, fleet: Fleet, batch: Batch) -> Explanation:
    """Explain where and when ``batch`` runs in the latest plan that placed it."""
    plan_id, rows, plan = _placement(session, batch.id)
    step = timedelta(minutes=fleet.slot_minutes)
    submitted = datetime.fromtimestamp(batch.created_at, UTC)
    deadline = batch.deadline if batch.deadline.tzinfo else batch.deadline.replace(tzinfo=UTC)
    first = _slot(submitted, fleet.slot_minutes)
    all_sites = [s.name for s in fleet.sites]
    allowed = list(batch.sites or all_sites)
    horizon_end = max(deadline + timedelta(hours=24), first + step)
    sig = _signals(session, all_sites, first, horizon_end, sum(a.energy_kwh for a in rows))
    got, effective = _intensity_got(rows, sig.solar_kw, step.total_seconds() / 3600)
    cells = [(a.site, a.slot_start.astimezone(UTC)) for a in rows]
    # a chosen cell shows the CO2 the plan priced for the batch's share there (the pricing
    # module's figure), not the whole batch's energy at that intensity
    planned_co2: dict[tuple[str, datetime], float] = {}
    for a, c in zip(rows, cells, strict=True):
        planned_co2[c] = planned_co2.get(c, 0.0) + a.co2_g
    chosen = [
        sig.option(*c).model_copy(update={"co2_g": planned_co2[c]})
        for c in dict.fromkeys(cells)
        if c in sig.carbon
    ]
    here = chosen[0].site if chosen else (allowed[0] if allowed else None)
    at_once_here = sig.carbon.get((here, first)) if here else None
    next_best = sig.best(allowed, first, deadline, frozenset(cells))
    cleanest = sig.best(allowed, first, deadline)
    # a batch wholly in its cleanest allowed slot was not limited, whatever binds there
    moved = got is not None and cleanest is not None and got > cleanest.carbon_g_per_kwh + 1e-9
    from_duals = dual_reason(
        plan.duals if plan is not None and moved else None,
        [(a.site, a.pool, a.slot_start.astimezone(UTC)) for a in rows],
        (next_best.site, next_best.slot_start) if next_best is not None else None,
    )
    decided = _limit(
        _Limit(
            placed=bool(rows),
            allowed=tuple(allowed),
            moved=moved,
            worst_got=effective if chosen else None,
            outside=sig.best([s for s in all_sites if s not in allowed], first, deadline),
            later=sig.best(allowed, deadline, horizon_end),
            next_best=next_best,
            from_duals=from_duals,
            notes=" ".join(plan.notes or []) if plan is not None and plan.notes else "",
        ),
        lambda o: _pool_full(session, fleet, plan_id, o.site, o.slot_start),
    )
    basis = BASIS if plan is None or plan.duals is None else BASIS_DUALS_SILENT
    if decided is not None and from_duals is not None and decided == from_duals:
        basis = DUALS_BASIS
    limited_by, because = decided or (
        "none",
        "it runs in the cleanest allowed slot before its deadline",
    )
    if limited_by == "none" and effective is not None and got is not None and effective < got:
        because += (
            f"; on-site solar covers {100 * (1 - effective / got):.0f} % of its energy "
            f"({effective:.0f} g/kWh net of it)"
        )
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
        at_once_best=sig.best(allowed, first, first + step),
        next_best=next_best,
        limited_by=limited_by,
        because=because,
        summary=_summary(batch.id, chosen, got, at_once_here, next_best, limited_by, because),
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
