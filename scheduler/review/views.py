"""Typed views of the operations review (plans, schedule, batch review, savings, budget, accuracy)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

LOCATION_BASED_CAVEAT = (
    "Realised savings are location-based and like for like: each ledger row against the same "
    "booked energy (same model) run at once at the same site, priced as booking prices a slot "
    "(the submission slot's mean signal, the same average factor type, that slot's own on-site "
    "renewables), for the requests that succeeded only; no saving is claimed where the "
    "submission slot has no first-hand signal. Plans' figures are planned benefit (estimates "
    "against the planner's baselines). Savings are not market-based and include estimates "
    "wherever energy_method is not measured."
)


class Totals(BaseModel):
    """Carbon, cost, water, energy and delay of some work."""

    co2_g: float = 0.0
    cost: float = 0.0
    water_l: float = 0.0
    energy_kwh: float = 0.0
    delay_h: float = 0.0


class PlanVersion(BaseModel):
    """One stored plan version (without its assignments)."""

    id: int
    created_at: datetime
    trigger: str
    status: str
    is_current: bool
    objectives: list[Any]
    tolerances: list[Any]
    totals: dict[str, Any]
    baselines: dict[str, Any]
    unplaced: list[Any]
    solve_s: float
    fallback_signals: bool
    horizon_start: datetime
    horizon_end: datetime
    assignment_count: int = 0


class PlanVersions(BaseModel):
    """Plan versions, newest first."""

    data: list[PlanVersion]
    count: int


class SignalPoint(BaseModel):
    """One slot of a site's signals; ``None`` where no value is cached."""

    time: datetime
    #: ``actual`` (measured or booked) or ``forecast`` (what the plan saw), for the carbon
    #: intensity (else the first field) of this point.
    kind: str | None = None
    carbon_g_per_kwh: float | None = None
    price_per_kwh: float | None = None
    renewable_kw: float | None = None


class SiteSignals(BaseModel):
    """A site's signals over an axis (actuals where known, else forecasts)."""

    site: str
    points: list[SignalPoint]
    source: str = Field(
        default="cache",
        description="'cache' (forecast_points) or 'booked' (no cached signals: the plans' and "
        "ledger's carbon intensity and price where work was placed; gaps elsewhere).",
    )


class AssignmentView(BaseModel):
    """One assignment of a plan with the signals of its slot."""

    id: int
    batch_id: str
    tenant_id: str | None = None
    site: str
    pool: str
    model: str
    slot_start: datetime
    requests: int
    input_tokens: float
    output_tokens: float
    gpu_hours: float
    energy_kwh: float
    co2_g: float
    cost: float
    water_l: float
    carbon_g_per_kwh: float | None
    price_per_kwh: float | None = None
    renewable_kw: float | None = None
    signal_issued_at: datetime | None = Field(
        default=None,
        description="When the forecast the plan priced this slot with was issued (fetched); "
        "null for persistence values and plans made before it was kept.",
    )


class CurrentPlan(BaseModel):
    """The plan in force, its assignments (visible to the caller) and their sites' signals."""

    plan: PlanVersion | None
    assignments: list[AssignmentView]
    signals: list[SiteSignals]


class GanttBar(BaseModel):
    """One bar of the schedule: a shard, or an assignment not yet cut into shards."""

    id: str
    kind: str = Field(description="'shard' or 'assignment'")
    batch_id: str
    tenant_id: str | None = None
    site: str
    pool: str
    model: str
    start: datetime
    end: datetime
    status: str = Field(description="planned | queued | running | done | failed | cancelled")
    requests: int
    planned: bool = Field(description="Times are the planned slot (not yet started).")
    label: str | None = Field(
        default=None, description="The batch's job name (from `jobs submit`), for labels."
    )


class ScheduleView(BaseModel):
    """Gantt data: bars per (site, pool) lane and each site's signals on the same axis."""

    start: datetime
    end: datetime
    now: datetime
    slot_minutes: int
    lanes: list[str] = Field(description="'site/pool' lanes in display order.")
    bars: list[GanttBar]
    signals: list[SiteSignals]
    plan_id: int | None


class ShardRun(BaseModel):
    """Where, when and at what intensity one shard ran (or is planned to run)."""

    shard_id: str
    site: str
    pool: str
    model: str
    status: str
    slot_start: datetime
    started_at: datetime | None
    finished_at: datetime | None
    requests: int
    attempts: int
    carbon_g_per_kwh: float | None = Field(description="Intensity it got (booked or planned).")
    asap_carbon_g_per_kwh: float | None = Field(
        description="Intensity at the batch's submission slot at this site (run-at-once)."
    )
    energy_kwh: float | None
    co2_g: float | None
    water_l: float | None
    cost: float | None
    energy_method: str | None
    estimated: bool
    planned_energy_kwh: float | None
    planned_co2_g: float | None


class BatchReview(BaseModel):
    """Where and when a batch's shards ran, and why (intensity vs running at once)."""

    batch_id: str
    tenant_id: str
    status: str
    submitted_at: datetime
    deadline: datetime
    shards: list[ShardRun]
    planned: Totals
    actual: Totals
    asap_counterfactual: Totals
    embodied_co2_g: float
    co2_market_g: float | None
    energy_methods: list[str]
    estimated: bool = Field(description="True when any energy figure is an estimate.")
    reason: str
    saved_co2_g_by_place_and_time: float | None = Field(
        None,
        description="Realised: the same work run at once on the model it ran, minus booked "
        "(location-based CO2 + embodied, g); None without a fleet.",
    )
    saved_co2_g_by_model_choice: float | None = Field(
        None,
        description="Realised: the same work run at once on asap's model (the model the batch "
        "named, else the largest allowed) minus run at once on the model it ran (g); None "
        "without a fleet.",
    )


class SavingsRow(BaseModel):
    """Actual totals against the asap counterfactual and the planner's baselines."""

    key: str
    actual: Totals
    asap_counterfactual: Totals
    saved_co2_g_vs_asap: float
    saved_co2_g_by_place_and_time: float | None = None  # realised, same model (g)
    saved_co2_g_by_model_choice: float | None = None  # realised, asap's model vs the one run (g)
    asap: Totals | None = None
    carbon_greedy: Totals | None = None
    estimated: bool = False


class PlanSavings(BaseModel):
    """A plan's planned totals against its stored baselines."""

    plan_id: int
    created_at: datetime
    planned: Totals
    asap: Totals | None
    carbon_greedy: Totals | None
    saved_co2_g_vs_asap: float | None
    saved_co2_g_vs_carbon_greedy: float | None


class SavingsView(BaseModel):
    """Savings per day, per batch and per plan, with the location-based caveat."""

    start: datetime
    end: datetime
    caveat: str = LOCATION_BASED_CAVEAT
    per_day: list[SavingsRow]
    per_batch: list[SavingsRow]
    plans: list[PlanSavings]


class BudgetPeriod(BaseModel):
    """Budget use in one period (today or this month)."""

    period: str
    start: datetime
    budget_g: float | None
    used_g: float
    left_g: float | None
    left_fraction: float | None
    state: str | None
    breached: bool = Field(
        default=False, description="more CO2 booked in the period than its budget"
    )
    overspent_g: float = Field(default=0.0, description="booked CO2 above the budget, g")


class BudgetView(BaseModel):
    """Carbon budget used and left, its state, the pacing price and any breach."""

    scope: str
    today: BudgetPeriod
    month: BudgetPeriod
    state: str
    pacing_price_per_g: float | None
    pacing_day: str | None
    breached: list[str] = Field(
        default_factory=list, description="the periods (today, month) whose budget is breached"
    )


class AccuracyPoint(BaseModel):
    """Forecast and actual carbon intensity of one slot."""

    time: datetime
    forecast: float
    actual: float


class SiteAccuracy(BaseModel):
    """Forecast error of one site's carbon intensity."""

    site: str
    points: list[AccuracyPoint]
    mae_g_per_kwh: float | None
    mape_pct: float | None


class AccuracyView(BaseModel):
    """Forecast accuracy per site."""

    start: datetime
    end: datetime
    sites: list[SiteAccuracy]


class LedgerRow(BaseModel):
    """One ledger row: energy, carbon, water and cost of one execution attempt."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    batch_id: str
    shard_id: str
    attempt: int
    tenant_id: str
    site: str
    pool: str
    model: str
    started_at: datetime
    ended_at: datetime
    requests_done: int
    requests_failed: int
    input_tokens: int
    output_tokens: int
    gpu_hours: float
    it_energy_kwh: float
    facility_energy_kwh: float
    energy_method: str = Field(description="measured-nvml | measured-rapl | estimated")
    energy_estimated: bool = False
    renewable_share: float
    grid_kwh: float
    carbon_g_per_kwh: float
    carbon_source: str
    co2_location_g: float
    co2_market_g: float | None
    market_basis: str | None = Field(
        default=None,
        description="instruments | instruments+residual | instruments+location | residual | "
        "location (no instruments nor residual mix: the location-based figure, the fallback)",
    )
    carbon_factor: str | None = Field(
        default=None,
        description="factor type of the slot's signal: average-direct | average-lifecycle | "
        "marginal (co2_location_g is always priced with an average direct factor)",
    )
    co2_marginal_g: float | None = Field(
        default=None, description="emissions the load induced (marginal rate): never scope 2"
    )
    co2_lifecycle_g: float | None = Field(
        default=None, description="average lifecycle figure (upstream included): never scope 2"
    )
    signal_fallback: str | None = Field(
        default=None,
        description="None: first-hand | fallback-provider | cache | persistence | site-factor "
        "| zone-average",
    )
    signal_provider: str | None = Field(
        default=None, description="the provider that supplied the carbon figure"
    )
    signal_synthetic: bool | None = Field(
        default=None, description="the carbon figure is SYNTHETIC (generated, not the grid's)"
    )
    signal_fallback_reason: str | None = None
    embodied_co2_g: float
    water_onsite_l: float
    water_offsite_l: float
    cost: float
    price_fallback: str | None = Field(
        default=None,
        description="None: first-hand price | persistence | fallback-provider | no-price (cost "
        "booked 0: no price known)",
    )
    model_load_kwh: float | None = Field(
        default=None,
        description="IT energy of the model load this attempt booked (part of it_energy_kwh)",
    )
    model_load_method: str | None = Field(
        default=None, description="measured-nvml | measured-rapl | estimated (the load's label)"
    )
    planned_energy_kwh: float | None
    planned_co2_g: float | None
    planned_water_l: float | None
    planned_cost: float | None
    created_at: datetime


class LedgerPage(BaseModel):
    """Ledger rows of a time range, oldest first."""

    object: str = "list"
    data: list[LedgerRow]
    count: int
