"""Failure counters in Redis with a fixed window opened by the first failure.

Shared by every API instance through Redis (in-process fakeredis when embedded). Used for login
throttling; later for uploads. Counting failures, not attempts, means a user who types the
password right is never slowed down by the limiter.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis


@dataclass(frozen=True)
class Limit:
    key: str
    max_failures: int


async def blocked_for(redis: Redis, limits: list[Limit]) -> int | None:
    """Seconds until the caller may try again, or None when no limit is reached."""
    if not limits:
        return None
    counts = await redis.mget([limit.key for limit in limits])
    waits: list[int] = []
    for limit, raw in zip(limits, counts, strict=True):
        if raw is not None and int(raw) >= limit.max_failures:
            ttl = await redis.ttl(limit.key)
            waits.append(ttl if ttl > 0 else 1)
    return max(waits) if waits else None


async def record_failure(redis: Redis, limits: list[Limit], window_seconds: int) -> None:
    async with redis.pipeline(transaction=True) as pipe:
        for limit in limits:
            # NX keeps the window anchored at the first failure instead of sliding on each one.
            pipe.set(limit.key, 0, ex=window_seconds, nx=True)
            pipe.incr(limit.key)
        await pipe.execute()


async def clear(redis: Redis, *keys: str) -> None:
    if keys:
        await redis.delete(*keys)


async def take(redis: Redis, key: str, *, limit: int, window_seconds: int) -> int | None:
    """Count one attempt in a fixed window; seconds to wait when the limit is already reached."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(key, 0, ex=window_seconds, nx=True)
        pipe.incr(key)
        pipe.ttl(key)
        _, count, ttl = await pipe.execute()
    if int(count) > limit:
        return int(ttl) if int(ttl) > 0 else 1
    return None
