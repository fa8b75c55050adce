"""Tenant limits in Redis: one atomic Lua script per turn, shared by every API replica.

Per tenant, two keys (one hash slot, ``{tenant}``): a hash with the bucket's ``tokens`` and the
time ``ts`` it was last filled, and a sorted set of the turns in flight scored by the time their
lease ends. Times come from Redis' ``TIME``, so replicas with skewed clocks draw on one bucket.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from scheduler.api.limits import IN_FLIGHT_RETRY_S, Turn, lease_s
from scheduler.config import Settings

KEY_PREFIX = "gridshift:limits:"
# Redis answers within this or the guard falls back to per-process limits for the request.
REDIS_TIMEOUT_S = 1.0

# KEYS: bucket hash, in-flight sorted set. ARGV: per_minute, max_in_flight, lease_s, token.
# Returns {granted (0/1), wait seconds as a string} (Lua numbers would be truncated).
ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local per_minute = tonumber(ARGV[1])
local rate = per_minute / 60.0
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[2]) then
  return {0, ARGV[5]}
end
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1]) or per_minute
local ts = tonumber(b[2]) or now
tokens = math.min(per_minute, tokens + math.max(0, now - ts) * rate)
local granted = tokens >= 1
if granted then tokens = tokens - 1 end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], 120)
if not granted then
  return {0, tostring((1 - tokens) / rate)}
end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[4])
redis.call('EXPIRE', KEYS[2], math.ceil(tonumber(ARGV[3])) + 1)
return {1, '0'}
"""


def _keys(tenant: str) -> list[str]:
    return [f"{KEY_PREFIX}{{{tenant}}}:bucket", f"{KEY_PREFIX}{{{tenant}}}:inflight"]


@dataclass
class RedisLimits:
    """``TenantLimits`` in Redis (see the module docstring)."""

    client: aioredis.Redis
    per_minute: int
    max_in_flight: int
    lease_s: float
    name: str = "redis"

    @classmethod
    def from_url(cls, url: str, settings: Settings) -> RedisLimits:
        client = aioredis.Redis.from_url(
            url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
        )
        return cls(
            client,
            settings.tenant_requests_per_minute,
            settings.tenant_max_concurrent,
            lease_s(settings),
        )

    async def acquire(self, tenant: str) -> Turn:
        token = uuid.uuid4().hex
        args: list[Any] = [
            self.per_minute,
            self.max_in_flight,
            self.lease_s,
            token,
            IN_FLIGHT_RETRY_S,
        ]
        granted, wait = await self.client.eval(ACQUIRE, 2, *_keys(tenant), *args)
        return Turn(0.0, token) if int(granted) else Turn(max(float(wait), 0.001))

    async def release(self, tenant: str, token: str) -> None:
        await self.client.zrem(_keys(tenant)[1], token)

    async def aclose(self) -> None:
        await self.client.aclose()
