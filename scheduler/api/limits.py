"""Per-tenant request rate (token bucket) and requests in flight, counted where every API
replica sees them.

``TenantLimits`` is what the request guard asks: ``acquire`` a turn (granted, or the seconds to
wait), ``release`` it when the request ends. Three stores count the turns:

- ``MemoryLimits``: this process only (the single-process default on SQLite; also the fallback
  while a shared store does not answer).
- ``RedisLimits`` (``scheduler/api/limits_redis.py``): one Lua script per turn, atomic in Redis,
  on Redis' own clock, so every replica draws on one bucket.
- ``DatabaseLimits`` (``scheduler/api/limits_db.py``): the same in two PostgreSQL tables under a
  row lock, for deployments with no Redis.

A turn in flight is held as a lease (``lease_s``): a replica that dies with turns taken does not
leak its tenant's in-flight count for longer than that.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy import Engine

from scheduler.config import Settings

log = logging.getLogger(__name__)

# Seconds to wait before retrying when the tenant's in-flight cap is reached.
IN_FLIGHT_RETRY_S = 1.0


@dataclass(frozen=True, slots=True)
class Turn:
    """The answer to ``acquire``: granted with ``token`` (to release), or ``wait_s`` > 0."""

    wait_s: float
    token: str = ""

    @property
    def granted(self) -> bool:
        return self.wait_s <= 0


class TenantLimits(Protocol):
    """A store of per-tenant turns (see the module docstring)."""

    name: str

    async def acquire(self, tenant: str) -> Turn:
        """Take a turn for ``tenant`` if its rate and in-flight cap allow it."""
        ...

    async def release(self, tenant: str, token: str) -> None:
        """End a turn ``acquire`` granted."""
        ...

    async def aclose(self) -> None:
        """Close connections."""
        ...


@dataclass
class MemoryLimits:
    """Token bucket and in-flight count in this process's memory."""

    per_minute: int
    max_in_flight: int
    name: str = "memory"
    _tokens: dict[str, tuple[float, float]] = field(default_factory=dict)
    _in_flight: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, tenant: str) -> Turn:
        """``acquire`` without the coroutine (the guard's fallback calls it too)."""
        now = time.monotonic()
        rate = self.per_minute / 60.0
        with self._lock:
            if self._in_flight.get(tenant, 0) >= self.max_in_flight:
                return Turn(IN_FLIGHT_RETRY_S)
            tokens, last = self._tokens.get(tenant, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - last) * rate)
            if tokens < 1.0:
                self._tokens[tenant] = (tokens, now)
                return Turn((1.0 - tokens) / rate)
            self._tokens[tenant] = (tokens - 1.0, now)
            self._in_flight[tenant] = self._in_flight.get(tenant, 0) + 1
            return Turn(0.0, uuid.uuid4().hex)

    def give_back(self, tenant: str) -> None:
        """``release`` without the coroutine."""
        with self._lock:
            left = self._in_flight.get(tenant, 1) - 1
            if left <= 0:
                self._in_flight.pop(tenant, None)
            else:
                self._in_flight[tenant] = left

    async def acquire(self, tenant: str) -> Turn:
        return self.take(tenant)

    async def release(self, tenant: str, token: str) -> None:
        self.give_back(tenant)

    async def aclose(self) -> None:
        return None


def lease_s(settings: Settings) -> float:
    """How long a turn in flight counts at most: the request timeout and a margin (a download
    that streams longer stops counting against the cap then)."""
    return settings.request_timeout_s + 60.0


def redis_url_for_limits(settings: Settings) -> str:
    """The Redis the shared limits use: the dedicated setting, else a Redis broker, else ''."""
    if settings.limits_redis_url:
        return settings.limits_redis_url
    broker = settings.broker_url
    return broker if broker.startswith(("redis://", "rediss://")) else ""


def limits_from_settings(settings: Settings, engine: Engine) -> TenantLimits:
    """The store ``settings.limits_store`` names (``auto``: see ``Settings.limits_store``)."""
    choice = settings.limits_store
    redis_url = redis_url_for_limits(settings)
    if choice == "auto":
        if redis_url:
            choice = "redis"
        elif engine.dialect.name == "postgresql":
            choice = "database"
        else:
            choice = "memory"
    if choice == "redis":
        from scheduler.api.limits_redis import RedisLimits

        if not redis_url:
            from scheduler.errors import ConfigError

            raise ConfigError(
                "GRIDSHIFT_LIMITS_STORE=redis needs GRIDSHIFT_LIMITS_REDIS_URL or a redis:// "
                "GRIDSHIFT_BROKER_URL"
            )
        return RedisLimits.from_url(redis_url, settings)
    if choice == "database":
        from scheduler.api.limits_db import DatabaseLimits

        return DatabaseLimits(engine, settings)
    return MemoryLimits(settings.tenant_requests_per_minute, settings.tenant_max_concurrent)
