"""``PlanningProblem``: everything the pure planner needs, already parsed and checked."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from scheduler.domain import Fleet, Objective, PlanningBatch, SlotSignal


@dataclass(frozen=True, slots=True)
class FixedLoad:
    """Work already leased or running at (site, pool, slot): it uses capacity and energy.

    The re-planner passes these so that a new plan never moves or double-books leased work.
    """

    site: str
    pool: str
    slot: datetime
    gpu_hours: float
    facility_kwh: float


#: ``(batch, site, pool, model, slot)`` of one placement of a plan, a warm-start hint.
WarmCell = tuple[str, str, str, str, datetime]


@dataclass(frozen=True, slots=True)
class PlanningProblem:
    """A planning instance: fleet, per-(site, slot) signals, batches and the objective order.

    Attributes:
        fleet: sites, pools and models.
        slots: slot start times of the horizon, ascending, ``fleet.slot_minutes`` apart.
        signals: ``signals[(site, slot)]`` for every site and slot of the horizon.
        batches: the work to place.
        objectives: lexicographic order.
        tolerances: relative slack per stage, same length as ``objectives``.
        carbon_cap_g: optional cap on ``co2_g`` of this plan (the budget left for its horizon).
        carbon_cap_by_day_g: optional cap per UTC day of the horizon on the CO2 of the slots
            starting that day (the service: today's budget left for today, each later day's
            target for that day), so that no day borrows from another day's budget. One LP row
            per capped day; days not in the map are not capped per day. Both caps may be set.
        cap_carbon_g_per_kwh: the grid carbon factor the cap rows use per ``(site, slot)``
            where it differs from the signal's (the service: the average direct factor of a
            marginal or lifecycle site, the factor booking charges to the budget); missing
            keys use ``signals[...].carbon_g_per_kwh``. The objectives keep the signal's factor.
        carbon_price_per_g: pacing price added to the carbon stage (primal-dual pacer); 0 = off.
        fixed: work already committed, which consumes capacity and caps.
        slot_available: optional fraction (0..1] of a slot still usable (the slot in progress
            when the service re-plans); missing slots are fully available.
        time_limit_s: wall-clock limit per solver call.
        total_time_limit_s: optional wall-clock budget of the whole ``plan_problem`` call (all
            stages and placement rounds together); each solver call gets at most what is left,
            and a call with nothing left fails (``PlanningError`` before the first stage has an
            answer, else the plan keeps the stages already solved).
        max_quality: optional ceiling on the quality of models chosen for ``min_quality``
            batches (carbon-budget tiers forbid larger models); never below the batch's floor.
        max_quality_by_batch: per-batch ceilings (by batch id), overriding ``max_quality``.
        warm_cells: optional warm start, the ``(batch, site, pool, model, slot)`` cells of the
            plan in force (``WarmCell``). Column generation (``highs-colgen``) adds the cells
            that still exist to its seed columns; the other backends load every cell anyway
            and ignore it. It only changes where the search starts, never the optimum: a
            warm-started plan reaches the same stage values within the stage tolerances.
        reserved: expected arrivals (``scheduler.optimizer.arrivals``): planned beside
            ``batches`` so they hold capacity for work not yet submitted, never in the plan's
            assignments, unplaced list or totals.
    """

    fleet: Fleet
    slots: tuple[datetime, ...]
    signals: Mapping[tuple[str, datetime], SlotSignal]
    batches: tuple[PlanningBatch, ...]
    objectives: tuple[Objective, ...] = (Objective.CARBON, Objective.COST, Objective.DELAY)
    tolerances: tuple[float, ...] = (0.0, 0.0, 0.0)
    carbon_cap_g: float | None = None
    carbon_cap_by_day_g: Mapping[date, float] = field(default_factory=dict)
    cap_carbon_g_per_kwh: Mapping[tuple[str, datetime], float] = field(default_factory=dict)
    carbon_price_per_g: float = 0.0
    fixed: tuple[FixedLoad, ...] = ()
    slot_available: Mapping[datetime, float] = field(default_factory=dict)
    time_limit_s: float = 60.0
    total_time_limit_s: float | None = None
    max_quality: float | None = None
    max_quality_by_batch: Mapping[str, float] = field(default_factory=dict)
    warm_cells: tuple[WarmCell, ...] = ()
    reserved: tuple[PlanningBatch, ...] = ()

    @property
    def slot_delta(self) -> timedelta:
        """Length of one slot."""
        return timedelta(minutes=self.fleet.slot_minutes)

    @property
    def horizon_end(self) -> datetime:
        """End of the last slot."""
        return self.slots[-1] + self.slot_delta
