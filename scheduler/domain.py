"""Typed domain objects of gridshift: statuses, fleet, signals, planning batches and plans.

Pure: no I/O and no imports from the project. Units are in the names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class BatchStatus(StrEnum):
    """OpenAI Batch API statuses, used verbatim."""

    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


BATCH_TRANSITIONS: Mapping[BatchStatus, frozenset[BatchStatus]] = {
    BatchStatus.VALIDATING: frozenset(
        {BatchStatus.FAILED, BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING}
    ),
    BatchStatus.IN_PROGRESS: frozenset(
        {BatchStatus.FINALIZING, BatchStatus.CANCELLING, BatchStatus.EXPIRED, BatchStatus.FAILED}
    ),
    BatchStatus.FINALIZING: frozenset(
        {BatchStatus.COMPLETED, BatchStatus.EXPIRED, BatchStatus.FAILED}
    ),
    BatchStatus.CANCELLING: frozenset({BatchStatus.CANCELLED}),
    BatchStatus.FAILED: frozenset(),
    BatchStatus.COMPLETED: frozenset(),
    BatchStatus.EXPIRED: frozenset(),
    BatchStatus.CANCELLED: frozenset(),
}

TERMINAL_BATCH_STATUSES = frozenset(s for s, nxt in BATCH_TRANSITIONS.items() if not nxt)


def can_transition_batch(src: BatchStatus, dst: BatchStatus) -> bool:
    """Return whether a batch may move from ``src`` to ``dst``."""
    return dst in BATCH_TRANSITIONS[src]


class ShardStatus(StrEnum):
    """Lifecycle of a shard: a slice of one assignment's requests run by one worker."""

    PLANNED = "planned"
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


SHARD_TRANSITIONS: Mapping[ShardStatus, frozenset[ShardStatus]] = {
    ShardStatus.PLANNED: frozenset({ShardStatus.QUEUED, ShardStatus.CANCELLED}),
    # QUEUED -> QUEUED is a re-enqueue after a lost message; QUEUED -> PLANNED a failed send.
    ShardStatus.QUEUED: frozenset(
        {
            ShardStatus.RUNNING,
            ShardStatus.QUEUED,
            ShardStatus.PLANNED,
            ShardStatus.CANCELLED,
            ShardStatus.FAILED,
        }
    ),
    # RUNNING -> QUEUED when a lease expires (the worker died) or a worker gives the shard back;
    # RUNNING -> RUNNING when a worker re-claims a shard whose lease expired (attempt + 1).
    ShardStatus.RUNNING: frozenset(
        {ShardStatus.DONE, ShardStatus.FAILED, ShardStatus.QUEUED, ShardStatus.RUNNING}
    ),
    ShardStatus.DONE: frozenset(),
    ShardStatus.FAILED: frozenset(),
    ShardStatus.CANCELLED: frozenset(),
}


def can_transition_shard(src: ShardStatus, dst: ShardStatus) -> bool:
    """Return whether a shard may move from ``src`` to ``dst``."""
    return dst in SHARD_TRANSITIONS[src]


class MeasurementMethod(StrEnum):
    """How an energy figure was obtained; travels to every report."""

    MEASURED_NVML = "measured-nvml"
    MEASURED_RAPL = "measured-rapl"
    # a RAPL package shared with other open windows: each read's delta split among them
    MEASURED_RAPL_SHARED = "measured-rapl-shared"
    ESTIMATED = "estimated"  # busy time x profile power
    ESTIMATED_PROFILE = "estimated-profile"  # the planner's token model on the actual tokens
    # a measured window plus a model load estimated outside it: partly estimated, and says so
    MEASURED_NVML_ESTIMATED_LOAD = "measured-nvml+estimated-load"
    MEASURED_RAPL_ESTIMATED_LOAD = "measured-rapl+estimated-load"
    MEASURED_RAPL_SHARED_ESTIMATED_LOAD = "measured-rapl-shared+estimated-load"


ESTIMATED_LOAD_SUFFIX = "+estimated-load"


def is_estimate(method: str) -> bool:
    """True for every energy method that is not wholly a measurement (``estimated``,
    ``estimated-*``, and ``measured-*+estimated-load``: a row with an estimated part)."""
    return not method.startswith("measured") or "estimated" in method


class CarbonFactor(StrEnum):
    """What a carbon intensity means (GHG Protocol scope 2 guidance).

    ``average-direct``: average emissions of generation (combustion only);
    ``average-lifecycle``: average including upstream (lifecycle) emissions;
    ``marginal``: the emissions rate of the generator that responds to a change in load. Only
    average factors are location-based scope 2; a marginal rate may steer a plan and is
    reported as an avoided-emissions estimate.
    """

    AVERAGE_DIRECT = "average-direct"
    AVERAGE_LIFECYCLE = "average-lifecycle"
    MARGINAL = "marginal"


class Objective(StrEnum):
    """Planning objectives (planning-formats.md section 5)."""

    CARBON = "carbon"
    COST = "cost"
    WATER = "water"
    DELAY = "delay"


class PlanStatus(StrEnum):
    """Outcome of a planning run."""

    OPTIMAL = "optimal"
    FEASIBLE = "feasible"
    INFEASIBLE = "infeasible"


class BudgetState(StrEnum):
    """Carbon-budget states, from budget left: NORMAL > 50 %, TIGHTENING > 25 %, RESTRICTED > 10 %."""

    NORMAL = "normal"
    TIGHTENING = "tightening"
    RESTRICTED = "restricted"
    CRITICAL = "critical"


# --------------------------------------------------------------------------- fleet


@dataclass(frozen=True, slots=True)
class Profile:
    """Throughput and power of ONE replica of a model on one GPU type."""

    gpus: int
    prefill_tok_s: float
    decode_tok_s: float
    power_w: float


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A model the fleet can serve, with per-GPU-type profiles."""

    name: str
    quality: float
    profiles: Mapping[str, Profile]
    weights: str | None = None
    expected_output_fraction: float = 0.6
    extra: Mapping[str, Any] = field(default_factory=dict)
    kind: str = "generate"  # "generate" (chat, completions, responses) or "embed" (embeddings)
    # Tokens one request may span (prompt plus generated), as its engines load it; None: unknown
    # (then no request is refused or kept off the model for its length).
    context_tokens: int | None = None

    @property
    def embeds(self) -> bool:
        """True for an embedding model (serves ``/v1/embeddings`` only, never ``auto``)."""
        return self.kind == "embed"

    def holds(self, request_tokens: int | None) -> bool:
        """Whether a request needing ``request_tokens`` of context fits (None: unknown, fits)."""
        ctx = self.context_tokens
        return request_tokens is None or ctx is None or request_tokens <= ctx


@dataclass(frozen=True, slots=True)
class ModelAlias:
    """A name clients send (e.g. a hosted model's) that stands for a fleet model or ``auto``.

    ``model`` is a fleet model name or ``"auto"``; ``min_quality`` is the floor for ``auto``
    (None: the batch's ``min_quality``, else the fleet's ``default_min_quality``).
    """

    name: str
    model: str
    min_quality: float | None = None


@dataclass(frozen=True, slots=True)
class EngineSpec:
    """Which inference engine a pool runs, and its options (base_url, device, ...)."""

    kind: str = "vllm"
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Pool:
    """A pool of identical GPUs at a site."""

    name: str
    gpu: str
    count: int
    embodied_g_per_gpu_hour: float = 0.0
    engine: EngineSpec = field(default_factory=EngineSpec)


@dataclass(frozen=True, slots=True)
class SignalSource:
    """Where one signal of a site comes from (provider name and its options)."""

    provider: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Site:
    """An edge site: facility figures, optional caps, pools and signal sources."""

    name: str
    pue: float
    wue_l_per_kwh: float
    ewif_l_per_kwh: float
    pools: tuple[Pool, ...]
    water_cap_l_per_day: float | None = None
    grid_cap_kw: float | None = None
    market_factor_g_per_kwh: float | None = None  # contractual instruments (PPA, certificates)
    market_share_covered: float | None = None  # share of grid energy they cover (default 1)
    residual_mix_g_per_kwh: float | None = None  # market-based factor of the uncovered rest
    average_carbon_g_per_kwh: float | None = None  # booking's fallback when no signal is known
    signals: Mapping[str, SignalSource] = field(default_factory=dict)

    def pool(self, name: str) -> Pool:
        """Return the pool called ``name``; raise KeyError if absent."""
        for p in self.pools:
            if p.name == name:
                return p
        raise KeyError(f"site {self.name!r} has no pool {name!r}")


@dataclass(frozen=True, slots=True)
class CarbonBudget:
    """Optional carbon caps in grams (fleet-wide or per tenant)."""

    g_per_day: float | None = None
    g_per_month: float | None = None


@dataclass(frozen=True, slots=True)
class Fleet:
    """Sites, pools and models, as read from ``fleet.yaml``."""

    slot_minutes: int
    sites: tuple[Site, ...]
    models: tuple[ModelSpec, ...]
    default_objectives: tuple[Objective, ...] = (
        Objective.CARBON,
        Objective.COST,
        Objective.DELAY,
    )
    default_tolerances: tuple[float, ...] = (0.01, 0.0, 0.0)
    carbon_budget: CarbonBudget | None = None
    tenant_budgets: Mapping[str, CarbonBudget] = field(default_factory=dict)
    model_aliases: Mapping[str, ModelAlias] = field(default_factory=dict)
    default_min_quality: float | None = None

    @property
    def slot_hours(self) -> float:
        """Length of one slot in hours."""
        return self.slot_minutes / 60.0

    def site(self, name: str) -> Site:
        """Return the site called ``name``; raise KeyError if absent."""
        for s in self.sites:
            if s.name == name:
                return s
        raise KeyError(f"no site {name!r} in the fleet")

    def model(self, name: str) -> ModelSpec:
        """Return the model called ``name``; raise KeyError if absent."""
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(f"no model {name!r} in the fleet")

    @property
    def model_names(self) -> tuple[str, ...]:
        """Names of every model in the fleet, in file order."""
        return tuple(m.name for m in self.models)


# --------------------------------------------------------------------------- signals


@dataclass(frozen=True, slots=True)
class SlotSignal:
    """Signals of one site for one slot (one row of ``forecasts.csv``)."""

    time: datetime
    site: str
    carbon_g_per_kwh: float
    price_per_kwh: float
    renewable_kw: float
    wue_l_per_kwh: float | None = None
    source: str = "csv"
    fallback: bool = False
    carbon_factor: str = CarbonFactor.AVERAGE_DIRECT.value
    #: when the forecast behind these values was issued (the cache's ``fetched_at``; the oldest
    #: of its parts); None for values no issue of this slot gave (persistence, plain files)
    issued_at: datetime | None = None
    #: provenance of the carbon figure: the provider that supplied it (None: not known, e.g. a
    #: plain file), whether that provider is synthetic (generated, not a measurement or a
    #: forecast of the grid), and why a fallback was used (None: first-hand)
    carbon_provider: str | None = None
    synthetic: bool = False
    fallback_reason: str | None = None


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True, slots=True)
class PlanningBatch:
    """One planning job (one line of ``batches.jsonl``).

    Exactly one of ``model`` and ``min_quality`` is set.
    """

    id: str
    requests: int
    input_tokens: float
    output_tokens: float
    submitted_at: datetime
    deadline: datetime
    model: str | None = None
    min_quality: float | None = None
    sites: tuple[str, ...] | None = None
    priority: float = 1.0
    tenant: str | None = None
    tokens_estimated: bool = False
    # Context the largest request needs at least (prompt lower bound + max_tokens): the batch
    # runs only on models whose ``context_tokens`` hold it. None: no request's length is known.
    max_request_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Assignment:
    """Whole requests of one batch placed at (site, pool, model, slot)."""

    batch: str
    site: str
    pool: str
    model: str
    slot: datetime
    requests: int
    input_tokens: float
    output_tokens: float
    gpu_hours: float
    energy_kwh: float


@dataclass(frozen=True, slots=True)
class Unplaced:
    """A batch the planner could not place, with a reason the user can act on."""

    batch: str
    reason: str


@dataclass(frozen=True, slots=True)
class PlanTotals:
    """Totals of a plan, priced per planning-formats.md section 4."""

    co2_g: float = 0.0
    operational_co2_g: float = 0.0
    embodied_co2_g: float = 0.0
    cost: float = 0.0
    water_l: float = 0.0
    energy_kwh: float = 0.0
    grid_kwh: float = 0.0
    delay_h: float = 0.0


@dataclass(frozen=True, slots=True)
class BaselineTotals:
    """Totals of a naive baseline (``asap`` or ``carbon_greedy``)."""

    co2_g: float
    cost: float
    water_l: float
    delay_h: float
    unplaced: int
    caps_broken: int = 0


@dataclass(frozen=True, slots=True)
class BindingRow:
    """A binding limit of the LP stage that decided placement, with its shadow price.

    ``kind`` is ``capacity`` (``site``, ``pool``, ``start`` = slot start), ``water`` (``site``,
    ``start`` = UTC day) or ``carbon_cap`` (the budget); ``shadow_price`` is what one more
    unit of the limit would save of ``objective`` (``unit``), read from the row's dual.
    """

    kind: str
    objective: str
    shadow_price: float
    unit: str
    site: str | None = None
    pool: str | None = None
    start: datetime | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """The planner's answer (``plan.json``)."""

    status: PlanStatus
    objectives: tuple[Objective, ...]
    tolerances: tuple[float, ...]
    totals: PlanTotals
    assignments: tuple[Assignment, ...]
    unplaced: tuple[Unplaced, ...] = ()
    baselines: Mapping[str, BaselineTotals] = field(default_factory=dict)
    solve_s: float = 0.0
    stage_optima: Mapping[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    fallback_signals: bool = False
    #: Binding rows (non-zero duals) of the stage that decided placement; empty when the
    #: backend gives no duals or that stage did not end optimal.
    duals: tuple[BindingRow, ...] = ()
