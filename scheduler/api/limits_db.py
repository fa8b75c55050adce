"""Tenant limits in PostgreSQL, for replicas that share a database and no Redis.

One short transaction per turn on a small engine of its own (so limit checks never wait on the
request pool): the tenant's bucket row is created if missing and locked (``FOR UPDATE``),
expired turns are dropped, and the turn is granted and recorded, or refused with the wait.
Times are the database's clock (``clock_timestamp()``), the one every replica shares.
"""

from __future__ import annotations

import uuid

import anyio
from sqlalchemy import Connection, Engine, text

from scheduler.api.limits import IN_FLIGHT_RETRY_S, Turn, lease_s
from scheduler.config import Settings
from scheduler.store.db import make_engine

# Connections (and threads) for limit checks; a check waits at most POOL_TIMEOUT_S for one.
LIMIT_CONNECTIONS = 4
POOL_TIMEOUT_S = 2.0

_NOW = text("SELECT extract(epoch from clock_timestamp())")
_ENSURE = text(
    "INSERT INTO api_rate_buckets (tenant_id, tokens, filled_at) VALUES (:t, :full, :now) "
    "ON CONFLICT (tenant_id) DO NOTHING"
)
_LOCK = text("SELECT tokens, filled_at FROM api_rate_buckets WHERE tenant_id = :t FOR UPDATE")
_EXPIRE = text("DELETE FROM api_turns WHERE tenant_id = :t AND expires_at < :now")
_COUNT = text("SELECT count(*) FROM api_turns WHERE tenant_id = :t")
_FILL = text("UPDATE api_rate_buckets SET tokens = :tokens, filled_at = :now WHERE tenant_id = :t")
_TURN = text("INSERT INTO api_turns (token, tenant_id, expires_at) VALUES (:k, :t, :until)")
_END = text("DELETE FROM api_turns WHERE token = :k")


class DatabaseLimits:
    """``TenantLimits`` in two PostgreSQL tables (see the module docstring)."""

    name = "database"

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = make_engine(
            engine.url.render_as_string(hide_password=False),
            pool_size=LIMIT_CONNECTIONS,
            max_overflow=0,
            pool_timeout=POOL_TIMEOUT_S,
        )
        self.per_minute = settings.tenant_requests_per_minute
        self.max_in_flight = settings.tenant_max_concurrent
        self.lease_s = lease_s(settings)
        self.threads = anyio.CapacityLimiter(LIMIT_CONNECTIONS)

    def _take(self, conn: Connection, tenant: str) -> Turn:
        now = float(conn.execute(_NOW).scalar_one())
        full = float(self.per_minute)
        conn.execute(_ENSURE, {"t": tenant, "full": full, "now": now})
        tokens, filled_at = conn.execute(_LOCK, {"t": tenant}).one()
        conn.execute(_EXPIRE, {"t": tenant, "now": now})
        if conn.execute(_COUNT, {"t": tenant}).scalar_one() >= self.max_in_flight:
            return Turn(IN_FLIGHT_RETRY_S)
        rate = full / 60.0
        tokens = min(full, float(tokens) + max(0.0, now - float(filled_at)) * rate)
        granted = tokens >= 1.0
        left = tokens - 1.0 if granted else tokens
        conn.execute(_FILL, {"t": tenant, "tokens": left, "now": now})
        if not granted:
            return Turn((1.0 - tokens) / rate)
        token = uuid.uuid4().hex
        conn.execute(_TURN, {"k": token, "t": tenant, "until": now + self.lease_s})
        return Turn(0.0, token)

    def take(self, tenant: str) -> Turn:
        """``acquire`` in the calling thread."""
        with self.engine.begin() as conn:
            return self._take(conn, tenant)

    def give_back(self, token: str) -> None:
        """``release`` in the calling thread."""
        with self.engine.begin() as conn:
            conn.execute(_END, {"k": token})

    async def acquire(self, tenant: str) -> Turn:
        return await anyio.to_thread.run_sync(self.take, tenant, limiter=self.threads)

    async def release(self, tenant: str, token: str) -> None:
        await anyio.to_thread.run_sync(self.give_back, token, limiter=self.threads)

    async def aclose(self) -> None:
        self.engine.dispose()
