"""AI result cache in Redis (in-process when embedded), shared by every worker.

Keyed by everything that determines a provider's answer: the operation, the image's SHA-256,
the prompt, the reference's SHA-256, the provider and the model. Entries expire after the TTL;
an index sorted by insertion time bounds the count, evicting the oldest first.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass

from redis.asyncio import Redis

from backend.config import Settings

PREFIX = "atelier:ai-cache"
INDEX = f"{PREFIX}:index"
HITS = f"{PREFIX}:hits"
MISSES = f"{PREFIX}:misses"


def cache_key(
    *,
    operation: str,
    image_sha256: str,
    provider: str,
    model: str,
    prompt: str = "",
    reference_sha256: str = "",
) -> str:
    parts = json.dumps([operation, image_sha256, prompt, reference_sha256, provider, model])
    return f"{PREFIX}:entry:{hashlib.sha256(parts.encode()).hexdigest()}"


@dataclass(frozen=True)
class CacheStatus:
    entries: int
    hits: int
    misses: int
    hit_rate: float
    ttl_seconds: int
    max_entries: int


class AiCache:
    def __init__(self, redis: Redis, *, ttl_seconds: int, max_entries: int) -> None:
        self.redis = redis
        self.ttl = ttl_seconds
        self.max_entries = max_entries

    @classmethod
    def configured(cls, redis: Redis, settings: Settings) -> AiCache:
        return cls(
            redis,
            ttl_seconds=settings.ai_cache_ttl_seconds,
            max_entries=settings.ai_cache_max_entries,
        )

    async def get(self, key: str) -> bytes | None:
        value = await self.redis.get(key)
        await self.redis.incr(HITS if value is not None else MISSES)
        # The clients are made with decode_responses=False: values are bytes.
        return value if isinstance(value, bytes) else None

    async def put(self, key: str, value: bytes) -> None:
        now = time.time()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(key, value, ex=self.ttl)
            pipe.zadd(INDEX, {key: now})
            pipe.zremrangebyscore(INDEX, 0, now - self.ttl)
            await pipe.execute()
        overflow = await self.redis.zcard(INDEX) - self.max_entries
        if overflow > 0:
            oldest = await self.redis.zpopmin(INDEX, overflow)
            members = [entry[0] for entry in oldest if isinstance(entry, tuple | list)]
            if members:
                await self.redis.delete(*members)

    async def status(self) -> CacheStatus:
        await self.redis.zremrangebyscore(INDEX, 0, time.time() - self.ttl)
        entries = int(await self.redis.zcard(INDEX))
        hits = int(await self.redis.get(HITS) or 0)
        misses = int(await self.redis.get(MISSES) or 0)
        total = hits + misses
        return CacheStatus(
            entries=entries,
            hits=hits,
            misses=misses,
            hit_rate=round(hits / total, 4) if total else 0.0,
            ttl_seconds=self.ttl,
            max_entries=self.max_entries,
        )
