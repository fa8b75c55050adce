"""Typed settings (environment variables with the ``GRIDSHIFT_`` prefix)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_DB_SCHEMES = ("sqlite", "postgresql")

# OpenAI's documented Batch API limits.
OPENAI_MAX_REQUESTS_PER_BATCH = 50_000
OPENAI_MAX_FILE_BYTES = 200 * 1024 * 1024
# OpenAI's documented Uploads API limits: 8 GB per upload, 64 MB per part, an hour to complete.
OPENAI_MAX_UPLOAD_BYTES = 8 * 1024**3
OPENAI_MAX_UPLOAD_PART_BYTES = 64 * 1024 * 1024
OPENAI_UPLOAD_EXPIRES_S = 3_600


class Settings(BaseSettings):
    """Everything gridshift reads from its environment; defaults suit one machine.

    Construct explicitly (``Settings()`` reads the environment) and pass to factories such as
    ``create_app(settings)``; nothing reads settings at import time.
    """

    model_config = SettingsConfigDict(
        env_prefix="GRIDSHIFT_", env_nested_delimiter="__", extra="ignore"
    )

    data_dir: Path = Field(
        default=Path(".gridshift"), description="Uploaded and produced files, SQLite database."
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL; empty means an SQLite file `gridshift.db` in data_dir.",
    )
    broker_url: str = Field(
        default="",
        description="Celery broker; empty means embedded (SQLAlchemy transport on the database).",
    )
    fleet: Path | None = Field(
        default=None, description="Path to fleet.yaml; empty means the bundled sample fleet."
    )
    shared_dir: Path = Field(default=Path("../shared"), description="Shared traces for tests.")
    api_url: str = Field(
        default="http://127.0.0.1:8080", description="Where the CLI finds the API."
    )
    api_key: str = Field(default="", description="Bearer key the CLI sends.")
    admin_key: str = Field(
        default="",
        description="Bootstrap admin key accepted by the API in addition to stored keys.",
    )

    max_requests_per_batch: int = Field(default=OPENAI_MAX_REQUESTS_PER_BATCH, ge=1)
    max_file_bytes: int = Field(default=OPENAI_MAX_FILE_BYTES, ge=1)
    max_upload_bytes: int = Field(
        default=OPENAI_MAX_UPLOAD_BYTES,
        ge=1,
        description="Largest file an upload (POST /v1/uploads) may assemble, in bytes.",
    )
    max_upload_part_bytes: int = Field(
        default=OPENAI_MAX_UPLOAD_PART_BYTES,
        ge=1,
        description="Largest part of an upload (POST /v1/uploads/ID/parts), in bytes.",
    )
    upload_expires_s: int = Field(
        default=OPENAI_UPLOAD_EXPIRES_S,
        ge=1,
        description="An upload not completed this many seconds after its creation expires.",
    )
    validate_sync_max_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=0,
        description="Input files up to this size are validated inside POST /v1/batches; larger "
        "ones answer `validating` and are validated in the background.",
    )
    part_file_max_age_s: float = Field(
        default=3_600.0,
        gt=0,
        description="Crash leftovers (`*.part` files) older than this are removed by the "
        "retention sweep.",
    )
    max_shard_requests: int = Field(default=1_000, ge=1)
    max_shard_gpu_minutes: float = Field(default=30.0, gt=0)
    lease_s: float = Field(default=120.0, gt=0, description="Shard lease length in seconds.")
    heartbeat_s: float = Field(default=20.0, gt=0)
    min_free_disk_mb: float = Field(
        default=256.0,
        ge=0,
        description="Free space (MiB) the data dir needs: below it workers claim no shard (they "
        "wait, then leave it queued) and readiness says so; 0 turns the check off.",
    )
    storage_backoff_max_s: float = Field(
        default=60.0,
        gt=0,
        description="Worker: longest wait after a storage fault (doubling from 1 s) before it "
        "claims again.",
    )
    tick_s: float = Field(default=15.0, gt=0, description="Dispatch tick period in seconds.")
    plan_time_limit_s: float = Field(default=300.0, gt=0, description="Per solver stage.")
    horizon_hours: int = Field(
        default=48, ge=1, description="Planning horizon (UK forecasts reach 48 h)."
    )
    arrival_history_days: int = Field(
        default=7,
        ge=0,
        description="Re-plans reserve capacity for the batches expected later, learned from "
        "this many days of received batches (a daily profile); 0 turns reservations off.",
    )
    arrival_reserve: float = Field(
        default=1.0,
        ge=0,
        description="Multiplies the expected arrivals reserved in each re-plan (0 = off).",
    )
    plan_budget_s: float = Field(
        default=120.0,
        gt=0,
        description="Total wall-clock budget of one service re-plan, all solver stages together.",
    )
    planner_debounce_s: float = Field(
        default=1.0, ge=0, description="Planner: wait this long after an arrival to batch more."
    )
    planner_poll_s: float = Field(
        default=1.0, gt=0, description="Planner: how often it looks for new work."
    )
    planner_fast_path: bool = Field(
        default=True,
        description="Planner: place new batches around the current plan at once (then re-plan).",
    )
    planner_full_every_s: float = Field(
        default=120.0,
        ge=0,
        description="Planner: a full re-plan follows fast-path additions after this long.",
    )
    planner_full_subprocess: bool = Field(
        default=True,
        description="Planner: run full re-plans in a child process (the fast path stays quick).",
    )
    planner_retry_s: float = Field(
        default=30.0, gt=0, description="Planner: wait before retrying a failed re-plan."
    )
    signals_fresh_s: float = Field(
        default=900.0,
        ge=0,
        description="Re-plans reuse fetched forecasts this long; older ones trigger a re-plan.",
    )
    plan_retention_h: float = Field(
        default=24.0,
        ge=0,
        description="Assignments of superseded plans older than this are compacted away.",
    )
    forecast_issue_retention_days: float = Field(
        default=90.0,
        gt=0,
        description="Forecast issues (every fetch kept in forecast_issues, what `gridshift "
        "backtest --store` replays) older than this are deleted by the retention sweep.",
    )
    calibrated_profiles: bool = Field(
        default=False,
        description="Plan with the profiles workers measured (gridshift profiles) instead of "
        "fleet.yaml's, where there is enough evidence.",
    )

    # Hardening of the HTTP API (scheduler/api/guard.py); see docs/operations.md "Limits".
    max_json_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="Largest JSON request body (bytes)."
    )
    request_timeout_s: float = Field(
        default=300.0, gt=0, description="A request not answering within this gets a 504."
    )
    max_concurrent_requests: int = Field(
        default=16, ge=1, description="Requests served at once; the database pool matches it."
    )
    queue_wait_s: float = Field(
        default=10.0, ge=0, description="Wait for a turn before answering 503 + Retry-After."
    )
    tenant_requests_per_minute: int = Field(
        default=6000, ge=1, description="Per-tenant request rate (token bucket, this burst)."
    )
    tenant_max_concurrent: int = Field(
        default=8, ge=1, description="Per-tenant requests in flight; more get 429."
    )
    tenant_max_files: int = Field(default=10_000, ge=1, description="Files a tenant may keep.")
    tenant_max_stored_bytes: int = Field(
        default=50 * 1024**3, ge=1, description="Bytes of files a tenant may keep."
    )
    tenant_max_batches_in_flight: int = Field(
        default=1_000, ge=1, description="Unfinished batches a tenant may have."
    )
    max_concurrent_uploads: int = Field(
        default=32,
        ge=1,
        description="Upload bodies received at once (spooled to the data dir outside the request "
        "slots, so slow uploads cannot starve reads, /healthz or authentication).",
    )
    limits_store: Literal["auto", "memory", "redis", "database"] = Field(
        default="auto",
        description="Where tenant rate limits and in-flight caps are counted: auto = Redis when "
        "GRIDSHIFT_LIMITS_REDIS_URL or a redis:// broker is set, else the database when it is "
        "PostgreSQL (shared by all API replicas), else this process's memory.",
    )
    limits_redis_url: str = Field(
        default="", description="A dedicated Redis for the shared limits (default: the broker's)."
    )
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="A connection that has not sent a complete request head within this is closed.",
    )
    keep_alive_s: int = Field(
        default=5, ge=1, description="Idle keep-alive connections are closed after this."
    )
    max_connections: int = Field(
        default=10_000,
        ge=16,
        description="Open connections and requests at once (uvicorn's limit_concurrency); beyond, "
        "503. Keep it under the open-file limit (`gridshift serve` raises the soft limit).",
    )
    metrics_public: bool = Field(
        default=True,
        description="Serve /metrics without a key (fleet aggregates only); false: admin key.",
    )
    metrics_store: bool = Field(
        default=True,
        description=(
            "The API's /metrics includes the store-derived families (queue depth, batches, "
            "ledger totals). Set false on API replicas behind a load balancer and scrape "
            "`gridshift dispatch --metrics-port` instead, so a sum over targets counts once."
        ),
    )
    dispatch_metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description=(
            "Port on which `gridshift dispatch` serves /metrics (store-derived families, "
            "planner state, process) and /healthz; 0: none."
        ),
    )
    api_docs: bool = Field(
        default=False,
        description="Serve /docs and /redoc (their scripts come from a CDN, so off by default).",
    )

    # Webhooks (scheduler/dispatch/webhooks.py); see docs/api.md "Webhooks".
    webhook_timeout_s: float = Field(
        default=10.0, gt=0, description="A webhook receiver must answer within this."
    )
    webhook_retry_base_s: float = Field(
        default=5.0, gt=0, description="First retry delay; it doubles with every failed attempt."
    )
    webhook_retry_max_s: float = Field(
        default=3_600.0, gt=0, description="Longest delay between two attempts of a delivery."
    )
    webhook_retry_window_s: float = Field(
        default=72 * 3_600.0,
        gt=0,
        description="A delivery still failing this long after its event is marked failed "
        "(OpenAI retries for 72 hours).",
    )
    webhook_poll_s: float = Field(
        default=2.0, gt=0, description="How often the dispatcher looks for due deliveries."
    )

    electricitymaps_token: str = ""
    watttime_username: str = ""
    watttime_password: str = ""
    http_timeout_s: float = Field(default=10.0, gt=0)

    @field_validator("database_url")
    @classmethod
    def _check_scheme(cls, v: str) -> str:
        if v and v.split(":", 1)[0].split("+", 1)[0] not in _DB_SCHEMES:
            raise ValueError(
                f"GRIDSHIFT_DATABASE_URL must start with sqlite:// or postgresql://, got {v!r}"
            )
        return v

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to an SQLite file in the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'gridshift.db').resolve()}"

    @property
    def files_dir(self) -> Path:
        """Directory holding uploaded and produced files."""
        return self.data_dir / "files"


def get_settings() -> Settings:
    """Read settings from the environment (call at the edges: CLI, app factory)."""
    return Settings()
