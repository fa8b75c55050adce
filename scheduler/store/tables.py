"""SQLAlchemy 2 tables of gridshift (typed declarative models).

Timestamps of OpenAI objects are Unix seconds (``int``), as the API shows them; planning and
execution times are timezone-aware UTC datetimes (``UTCDateTime``), stored naive-UTC so that
SQLite and PostgreSQL behave alike.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from scheduler.clock import now_utc as now_utc
from scheduler.clock import use_clock

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A datetime stored as naive UTC and returned timezone-aware (UTC)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: gridshift stores only aware UTC times")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


# The store's clock is gridshift's clock seam (``scheduler.clock``); these names stay for the
# code that imports them from here. ``replay_clock`` is ``gridshift demo``'s name for
# ``use_clock``: the API it runs in-process then stamps batches, leases and finalisation with the
# replayed time, so what the store records agrees with the slots the work was booked in.
replay_clock = use_clock


class Base(DeclarativeBase):
    """Declarative base with a constraint naming convention (stable migrations)."""

    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: UTCDateTime}


# --------------------------------------------------------------------------- tenancy


class Tenant(Base):
    """A tenant: owner of files, batches and keys."""

    __tablename__ = "tenants"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime]


class ApiKey(Base):
    """A bearer API key; only its SHA-256 is stored."""

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    key_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]


# --------------------------------------------------------------------------- OpenAI objects


class File(Base):
    """An uploaded or produced file (OpenAI ``file`` object); content lives on disk."""

    __tablename__ = "files"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    filename: Mapped[str] = mapped_column(String(500))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(1000))
    status: Mapped[str] = mapped_column(String(32), default="processed")
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int | None] = mapped_column(BigInteger)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)


class Batch(Base):
    """An OpenAI batch plus gridshift's planning options."""

    __tablename__ = "batches"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    endpoint: Mapped[str] = mapped_column(String(64))
    input_file_id: Mapped[str] = mapped_column(ForeignKey("files.id"))
    completion_window: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(32), index=True)
    output_file_id: Mapped[str | None] = mapped_column(String(64))
    error_file_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[int] = mapped_column(BigInteger, index=True)
    in_progress_at: Mapped[int | None] = mapped_column(BigInteger)
    expires_at: Mapped[int | None] = mapped_column(BigInteger)
    finalizing_at: Mapped[int | None] = mapped_column(BigInteger)
    completed_at: Mapped[int | None] = mapped_column(BigInteger)
    failed_at: Mapped[int | None] = mapped_column(BigInteger)
    expired_at: Mapped[int | None] = mapped_column(BigInteger)
    cancelling_at: Mapped[int | None] = mapped_column(BigInteger)
    cancelled_at: Mapped[int | None] = mapped_column(BigInteger)
    request_total: Mapped[int] = mapped_column(Integer, default=0)
    request_completed: Mapped[int] = mapped_column(Integer, default=0)
    request_failed: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[dict[str, Any] | None]
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    # gridshift's own options
    deadline: Mapped[datetime]
    model: Mapped[str | None] = mapped_column(String(200))
    min_quality: Mapped[float | None] = mapped_column(Float)
    sites: Mapped[list[Any] | None]
    priority: Mapped[float] = mapped_column(Float, default=1.0)
    # OpenAI ``output_expires_after.seconds``: output and error files expire that long after
    # they are written (None: kept until deleted).
    output_expires_after_s: Mapped[int | None] = mapped_column(Integer)


class BatchRequest(Base):
    """Index of one request line in a batch's input file (the content stays in the file)."""

    __tablename__ = "batch_requests"
    __table_args__ = (
        UniqueConstraint("batch_id", "custom_id"),
        UniqueConstraint("batch_id", "line_no"),
    )
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id"), index=True)
    part_id: Mapped[str] = mapped_column(String(200), index=True)
    line_no: Mapped[int] = mapped_column(Integer)
    custom_id: Mapped[str] = mapped_column(String(500))
    byte_offset: Mapped[int] = mapped_column(BigInteger)
    byte_len: Mapped[int] = mapped_column(Integer)
    input_tokens_est: Mapped[int] = mapped_column(Integer)
    max_tokens: Mapped[int | None] = mapped_column(Integer)
    shard_id: Mapped[str | None] = mapped_column(String(64), index=True)


class BatchPart(Base):
    """One planning batch: the requests of a batch that name one model (or ``auto``)."""

    __tablename__ = "batch_parts"
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id"), index=True)
    model: Mapped[str | None] = mapped_column(String(200))
    min_quality: Mapped[float | None] = mapped_column(Float)
    requests: Mapped[int] = mapped_column(Integer)
    input_tokens: Mapped[float] = mapped_column(Float)
    output_tokens: Mapped[float] = mapped_column(Float)
    tokens_estimated: Mapped[bool] = mapped_column(Boolean, default=True)
    #: context its largest request needs at least (prompt lower bound + max_tokens); the planner
    #: keeps the part off models whose ``context_tokens`` are smaller. None on parts stored
    #: before it was kept.
    max_request_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)


# --------------------------------------------------------------------------- plans


class PlanRecord(Base):
    """One version of the fleet plan; the newest with ``is_current`` is in force."""

    __tablename__ = "plans"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime]
    trigger: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32))
    objectives: Mapped[list[Any]]
    tolerances: Mapped[list[Any]]
    totals: Mapped[dict[str, Any]]
    baselines: Mapped[dict[str, Any]]
    unplaced: Mapped[list[Any]]
    stage_optima: Mapped[dict[str, Any] | None]
    notes: Mapped[list[Any] | None]
    #: binding LP rows of the stage that decided placement (``optimizer/duals.py``); None for
    #: plans made before they were kept
    duals: Mapped[list[Any] | None]
    solve_s: Mapped[float] = mapped_column(Float)
    fallback_signals: Mapped[bool] = mapped_column(Boolean, default=False)
    horizon_start: Mapped[datetime]
    horizon_end: Mapped[datetime]
    is_current: Mapped[bool] = mapped_column(Boolean, default=False, index=True)


class AssignmentRecord(Base):
    """Whole requests of one batch part placed at (site, pool, model, slot) by one plan."""

    __tablename__ = "assignments"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id"), index=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id"), index=True)
    part_id: Mapped[str] = mapped_column(String(200))
    site: Mapped[str] = mapped_column(String(64))
    pool: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(200))
    slot_start: Mapped[datetime]
    requests: Mapped[int] = mapped_column(Integer)
    input_tokens: Mapped[float] = mapped_column(Float)
    output_tokens: Mapped[float] = mapped_column(Float)
    gpu_hours: Mapped[float] = mapped_column(Float)
    energy_kwh: Mapped[float] = mapped_column(Float)
    co2_g: Mapped[float] = mapped_column(Float, default=0.0)
    cost: Mapped[float] = mapped_column(Float, default=0.0)
    water_l: Mapped[float] = mapped_column(Float, default=0.0)
    carbon_g_per_kwh: Mapped[float | None] = mapped_column(Float)
    # the rest of the priced piece and the slot signal the plan used (booking starts from it)
    renewable_kwh: Mapped[float | None] = mapped_column(Float)
    grid_kwh: Mapped[float | None] = mapped_column(Float)
    price_per_kwh: Mapped[float | None] = mapped_column(Float)
    renewable_kw: Mapped[float | None] = mapped_column(Float)
    wue_l_per_kwh: Mapped[float | None] = mapped_column(Float)
    carbon_factor: Mapped[str | None] = mapped_column(String(32))
    #: issue time of the forecast the slot signal came from (``SlotSignal.issued_at``; a key
    #: into ``forecast_issues``); None for persistence values and plans made before 0008
    signal_issued_at: Mapped[datetime | None]
    #: provenance of the plan's carbon figure (``SlotSignal.carbon_provider``, ``synthetic``,
    #: ``fallback_reason``): booking copies it, so a row never looks first-hand when the plan's
    #: signal was not; None for plans made before 0011
    signal_provider: Mapped[str | None] = mapped_column(String(64))
    signal_synthetic: Mapped[bool | None] = mapped_column(Boolean)
    signal_fallback_reason: Mapped[str | None] = mapped_column(String(500))


# --------------------------------------------------------------------------- execution


class Shard(Base):
    """A slice of an assignment's requests, run by one worker of ``site.pool``."""

    __tablename__ = "shards"
    __table_args__ = (Index("ix_shards_status_slot", "status", "slot_start"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id"), index=True)
    part_id: Mapped[str] = mapped_column(String(200))
    plan_id: Mapped[int | None] = mapped_column(ForeignKey("plans.id"))
    assignment_id: Mapped[int | None] = mapped_column(ForeignKey("assignments.id"))
    site: Mapped[str] = mapped_column(String(64))
    pool: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(200))
    slot_start: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(32))
    request_count: Mapped[int] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    queued_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    output_path: Mapped[str | None] = mapped_column(String(1000))
    error_path: Mapped[str | None] = mapped_column(String(1000))
    requests_done: Mapped[int] = mapped_column(Integer, default=0)
    requests_failed: Mapped[int] = mapped_column(Integer, default=0)
    planned_energy_kwh: Mapped[float] = mapped_column(Float, default=0.0)
    planned_co2_g: Mapped[float] = mapped_column(Float, default=0.0)
    last_error: Mapped[str | None] = mapped_column(Text)


class Execution(Base):
    """One attempt at running a shard (claimed under a lease)."""

    __tablename__ = "executions"
    __table_args__ = (UniqueConstraint("shard_id", "attempt"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    shard_id: Mapped[str] = mapped_column(ForeignKey("shards.id"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    worker: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)


class LedgerEntry(Base):
    """Append-only: energy, carbon, water and cost of one finished execution attempt."""

    __tablename__ = "ledger_entries"
    __table_args__ = (UniqueConstraint("shard_id", "attempt"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(String(64), index=True)
    shard_id: Mapped[str] = mapped_column(String(64))
    attempt: Mapped[int] = mapped_column(Integer)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    site: Mapped[str] = mapped_column(String(64))
    pool: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(200))
    started_at: Mapped[datetime] = mapped_column(index=True)
    ended_at: Mapped[datetime]
    requests_done: Mapped[int] = mapped_column(Integer)
    requests_failed: Mapped[int] = mapped_column(Integer)
    input_tokens: Mapped[int] = mapped_column(BigInteger)
    output_tokens: Mapped[int] = mapped_column(BigInteger)
    gpu_hours: Mapped[float] = mapped_column(Float)
    it_energy_kwh: Mapped[float] = mapped_column(Float)
    facility_energy_kwh: Mapped[float] = mapped_column(Float)
    energy_method: Mapped[str] = mapped_column(String(64))
    renewable_share: Mapped[float] = mapped_column(Float)
    grid_kwh: Mapped[float] = mapped_column(Float)
    carbon_g_per_kwh: Mapped[float] = mapped_column(Float)
    carbon_source: Mapped[str] = mapped_column(String(32))
    co2_location_g: Mapped[float] = mapped_column(Float)
    co2_market_g: Mapped[float | None] = mapped_column(Float)
    embodied_co2_g: Mapped[float] = mapped_column(Float)
    water_onsite_l: Mapped[float] = mapped_column(Float)
    water_offsite_l: Mapped[float] = mapped_column(Float)
    cost: Mapped[float] = mapped_column(Float)
    planned_energy_kwh: Mapped[float | None] = mapped_column(Float)
    planned_co2_g: Mapped[float | None] = mapped_column(Float)
    planned_water_l: Mapped[float | None] = mapped_column(Float)
    planned_cost: Mapped[float | None] = mapped_column(Float)
    planned_grid_kwh: Mapped[float | None] = mapped_column(Float)
    carbon_factor: Mapped[str | None] = mapped_column(String(32))
    signal_fallback: Mapped[str | None] = mapped_column(String(64))
    market_basis: Mapped[str | None] = mapped_column(String(32))
    co2_marginal_g: Mapped[float | None] = mapped_column(Float)
    busy_estimate_kwh: Mapped[float | None] = mapped_column(Float)
    # a model load booked on the first shard after it: part of it_energy_kwh, labelled
    model_load_kwh: Mapped[float | None] = mapped_column(Float)
    model_load_method: Mapped[str | None] = mapped_column(String(32))
    #: provenance of the carbon signal booked (docs/pricing.md "Provenance"): the provider
    #: that supplied it, whether it is synthetic, why a fallback was used; None before 0011
    signal_provider: Mapped[str | None] = mapped_column(String(64))
    signal_synthetic: Mapped[bool | None] = mapped_column(Boolean)
    signal_fallback_reason: Mapped[str | None] = mapped_column(String(500))
    #: grid energy x an average LIFECYCLE factor (upstream included): never scope 2, reported
    #: apart (scope 3 category 3); None when the slot's signal was not lifecycle
    co2_lifecycle_g: Mapped[float | None] = mapped_column(Float)
    #: why ``cost`` is not a first-hand price (``persistence``; ``no-price``: no price known
    #: for the slot, cost booked 0 and counted apart); None when the price was first-hand
    price_fallback: Mapped[str | None] = mapped_column(String(64))
    deviations: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime]


# --------------------------------------------------------------------------- signals and budget


class ForecastPoint(Base):
    """One cached signal value: provider response or measured actual, per key and slot."""

    __tablename__ = "forecast_points"
    __table_args__ = (UniqueConstraint("provider", "key", "signal", "kind", "time"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(200))
    signal: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16), default="forecast")
    time: Mapped[datetime] = mapped_column(index=True)
    value: Mapped[float] = mapped_column(Float)
    fetched_at: Mapped[datetime]


class ForecastIssue(Base):
    """Append-only: one forecast value as issued, every issue kept (``forecast_points`` keeps
    only the newest). ``issued_at`` is the cache's ``fetched_at`` of that write."""

    __tablename__ = "forecast_issues"
    __table_args__ = (UniqueConstraint("provider", "key", "signal", "time", "issued_at"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    provider: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(200))
    signal: Mapped[str] = mapped_column(String(32))
    time: Mapped[datetime]
    issued_at: Mapped[datetime] = mapped_column(index=True)  # the retention sweep's key
    value: Mapped[float] = mapped_column(Float)


class CarbonPacing(Base):
    """Daily state of the carbon-budget pacer (primal-dual carbon price)."""

    __tablename__ = "carbon_pacing"
    __table_args__ = (UniqueConstraint("scope", "day"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(64))
    day: Mapped[str] = mapped_column(String(10))
    budget_g: Mapped[float] = mapped_column(Float)
    spent_g: Mapped[float] = mapped_column(Float, default=0.0)
    price_per_g: Mapped[float] = mapped_column(Float, default=0.0)
    updated_at: Mapped[datetime]


# --------------------------------------------------------------------------- shared API limits


class ApiRateBucket(Base):
    """A tenant's request-rate token bucket, shared by API replicas (``limits_db.py``)."""

    __tablename__ = "api_rate_buckets"
    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tokens: Mapped[float] = mapped_column(Float)
    filled_at: Mapped[float] = mapped_column(Float)  # the database's epoch seconds


class ApiTurn(Base):
    """A request in flight of a tenant, until it ends or ``expires_at`` (epoch seconds)."""

    __tablename__ = "api_turns"
    token: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    expires_at: Mapped[float] = mapped_column(Float)


# Tables kept in modules of their own join ``Base.metadata`` whenever this module is imported
# (migrations and their model comparison see them).
from scheduler.store import presence as _presence  # noqa: E402, F401
from scheduler.store import upload_tables as _upload_tables  # noqa: E402, F401
from scheduler.store import webhook_tables as _webhook_tables  # noqa: E402, F401
