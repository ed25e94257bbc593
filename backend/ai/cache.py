"""AI result cache in Redis (in-process when embedded), shared by every worker.

Keyed by everything that determines a provider's answer: the operation, the image's SHA-256,
the prompt, the reference's SHA-256, the provider and the model. Entries expire after the TTL;
an index sorted by insertion time bounds the count, evicting the oldest first.

Beside each value a small hash keeps what the key was made of (in short: kind, provider, model,
hash prefixes, never the prompt itself), when it was written and how often it was read, for
the admin's entry list; it expires with the value.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from backend.config import Settings

PREFIX = "atelier:ai-cache"
INDEX = f"{PREFIX}:index"
HITS = f"{PREFIX}:hits"
MISSES = f"{PREFIX}:misses"


ENTRY = f"{PREFIX}:entry:"
META = f"{PREFIX}:meta:"
# How many hex digits of a hash the entry list shows: enough to tell entries apart.
SHORT_HASH = 12
# Entries read per round trip when the memory of every entry is summed.
_MEMORY_CHUNK = 500


@dataclass(frozen=True)
class CacheKey:
    """Everything that determines a provider's answer; ``redis_key`` is where it is kept."""

    operation: str
    image_sha256: str
    provider: str
    model: str
    prompt: str = ""
    reference_sha256: str = ""

    @property
    def digest(self) -> str:
        parts = json.dumps(
            [
                self.operation,
                self.image_sha256,
                self.prompt,
                self.reference_sha256,
                self.provider,
                self.model,
            ]
        )
        return hashlib.sha256(parts.encode()).hexdigest()

    @property
    def redis_key(self) -> str:
        return ENTRY + self.digest

    def described(self) -> dict[str, str]:
        prompt_hash = hashlib.sha256(self.prompt.encode()).hexdigest() if self.prompt else ""
        return {
            "kind": self.operation,
            "provider": self.provider,
            "model": self.model,
            "image": self.image_sha256[:SHORT_HASH],
            "prompt_hash": prompt_hash[:SHORT_HASH],
            "reference": self.reference_sha256[:SHORT_HASH],
        }


def cache_key(
    *,
    operation: str,
    image_sha256: str,
    provider: str,
    model: str,
    prompt: str = "",
    reference_sha256: str = "",
) -> CacheKey:
    return CacheKey(
        operation=operation,
        image_sha256=image_sha256,
        provider=provider,
        model=model,
        prompt=prompt,
        reference_sha256=reference_sha256,
    )


def _meta_key(redis_key: str) -> str:
    return META + redis_key.removeprefix(ENTRY)


@dataclass(frozen=True)
class CacheStatus:
    entries: int
    hits: int
    misses: int
    hit_rate: float
    ttl_seconds: int
    max_entries: int


@dataclass(frozen=True)
class CacheEntry:
    key: str  # the entry's digest
    kind: str | None  # None for an entry written before its parts were kept
    provider: str | None
    model: str | None
    image_sha256_prefix: str | None
    prompt_hash: str | None
    reference_sha256_prefix: str | None
    size_bytes: int
    memory_bytes: int | None  # Redis MEMORY USAGE of the value and its hash, where supported
    age_seconds: float
    ttl_seconds: float
    hits: int


@dataclass(frozen=True)
class CachePage:
    entries: list[CacheEntry]
    next_cursor: str | None


@dataclass(frozen=True)
class CacheMemory:
    used_bytes: int  # the cache's entries, values and their hashes, and its index
    method: str  # "memory_usage" (Redis' own count) or "value_bytes" (lengths only)
    redis_used_bytes: int | None  # the whole Redis server, from INFO memory, when it answers


class BadCursor(ValueError):
    pass


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

    async def get(self, key: CacheKey) -> bytes | None:
        redis_key = key.redis_key
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(redis_key)
            pipe.pttl(redis_key)
            value, pttl = await pipe.execute()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.incr(HITS if value is not None else MISSES)
            if value is not None and isinstance(pttl, int) and pttl > 0:
                meta = _meta_key(redis_key)
                # The hash lives exactly as long as its value, so a late count leaves nothing.
                pipe.hincrby(meta, "hits", 1)
                pipe.pexpire(meta, pttl)
            await pipe.execute()
        # The clients are made with decode_responses=False: values are bytes.
        return value if isinstance(value, bytes) else None

    async def put(self, key: CacheKey, value: bytes) -> None:
        now = time.time()
        redis_key = key.redis_key
        meta = _meta_key(redis_key)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(redis_key, value, ex=self.ttl)
            pipe.delete(meta)
            fields = {**key.described(), "created_at": repr(now), "hits": "0"}
            pipe.hset(meta, mapping=dict(fields.items()))
            pipe.expire(meta, self.ttl)
            pipe.zadd(INDEX, {redis_key: now})
            pipe.zremrangebyscore(INDEX, 0, now - self.ttl)
            await pipe.execute()
        overflow = await self.redis.zcard(INDEX) - self.max_entries
        if overflow > 0:
            oldest = await self.redis.zpopmin(INDEX, overflow)
            members = [_text(entry[0]) for entry in oldest if isinstance(entry, tuple | list)]
            if members:
                await self.redis.delete(*members, *(_meta_key(m) for m in members))

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

    async def entries(self, *, limit: int, cursor: str | None = None) -> CachePage:
        """Entries newest first, ``limit`` at a time; ``cursor`` is a page's ``next_cursor``.

        The cursor names the last entry shown (insertion time and key), so entries added while
        paging never shift a later page; raises BadCursor for one this method did not make.
        """
        now = time.time()
        await self.redis.zremrangebyscore(INDEX, 0, now - self.ttl)
        rows: list[tuple[str, float]]
        if cursor is None:
            found = await self.redis.zrevrangebyscore(
                INDEX, "+inf", "-inf", start=0, num=limit + 1, withscores=True
            )
            rows = [_scored(row) for row in found]
        else:
            score, last = _parse_cursor(cursor)
            # Entries written in the same instant share a score; they come in reverse key order.
            ties = int(await self.redis.zcount(INDEX, score, score))
            found = await self.redis.zrevrangebyscore(
                INDEX, score, "-inf", start=0, num=limit + ties + 1, withscores=True
            )
            rows = [
                (member, at)
                for member, at in map(_scored, found)
                if at < score or (at == score and member < last)
            ]
        page = rows[: limit + 1]
        more = len(page) > limit
        page = page[:limit]
        detail = await self._details([member for member, _ in page], now)
        entries = [entry for entry in detail if entry is not None]
        next_cursor = None
        if more and page:
            member, at = page[-1]
            next_cursor = f"{at!r}_{member.removeprefix(ENTRY)}"
        return CachePage(entries=entries, next_cursor=next_cursor)

    async def memory(self) -> CacheMemory:
        """What the cache takes in Redis: MEMORY USAGE summed over its keys where the server
        has that command, else the stored lengths (the embedded in-process Redis has neither
        MEMORY nor INFO)."""
        members = [_text(m) for m in await self.redis.zrange(INDEX, 0, -1)]
        exact = await self._memory_usage_supported()
        total = 0
        for start in range(0, len(members), _MEMORY_CHUNK):
            chunk = members[start : start + _MEMORY_CHUNK]
            async with self.redis.pipeline(transaction=False) as pipe:
                for member in chunk:
                    if exact:
                        pipe.memory_usage(member)
                        pipe.memory_usage(_meta_key(member))
                    else:
                        pipe.strlen(member)
                total += sum(int(n or 0) for n in await pipe.execute())
        if exact:
            total += int(await self.redis.memory_usage(INDEX) or 0)
        return CacheMemory(
            used_bytes=total,
            method="memory_usage" if exact else "value_bytes",
            redis_used_bytes=await self._redis_used_memory(),
        )

    async def _details(self, members: Sequence[str], now: float) -> list[CacheEntry | None]:
        if not members:
            return []
        exact = await self._memory_usage_supported()
        async with self.redis.pipeline(transaction=False) as pipe:
            for member in members:
                meta_key = _meta_key(member)
                pipe.strlen(member)
                pipe.pttl(member)
                pipe.hgetall(meta_key)
                pipe.zscore(INDEX, member)
                if exact:
                    pipe.memory_usage(member)
                    pipe.memory_usage(meta_key)
            answers = await pipe.execute()
        width = 6 if exact else 4
        found: list[CacheEntry | None] = []
        for index, member in enumerate(members):
            size, pttl, raw_meta, score, *memory = answers[index * width : (index + 1) * width]
            if not isinstance(pttl, int) or pttl < 0:
                found.append(None)  # expired between the index read and now
                continue
            meta = {_text(k): _text(v) for k, v in (raw_meta or {}).items()}
            created = float(meta.get("created_at") or score or now)
            found.append(
                CacheEntry(
                    key=member.removeprefix(ENTRY),
                    kind=meta.get("kind"),
                    provider=meta.get("provider"),
                    model=meta.get("model"),
                    image_sha256_prefix=meta.get("image"),
                    prompt_hash=meta.get("prompt_hash"),
                    reference_sha256_prefix=meta.get("reference"),
                    size_bytes=int(size or 0),
                    memory_bytes=sum(int(m or 0) for m in memory) if exact else None,
                    age_seconds=round(max(0.0, now - created), 3),
                    ttl_seconds=round(pttl / 1000, 3),
                    hits=int(meta.get("hits") or 0),
                )
            )
        return found

    async def _memory_usage_supported(self) -> bool:
        try:
            await self.redis.memory_usage(INDEX)
        except ResponseError:
            return False
        return True

    async def _redis_used_memory(self) -> int | None:
        try:
            info: dict[str, Any] = await self.redis.info("memory")
        except ResponseError:
            return None
        used = info.get("used_memory")
        return int(used) if used is not None else None


def _scored(row: object) -> tuple[str, float]:
    member, score = row if isinstance(row, tuple | list) else (row, 0.0)
    return _text(member), float(score)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _parse_cursor(cursor: str) -> tuple[float, str]:
    score_text, _, digest = cursor.partition("_")
    try:
        score = float(score_text)
    except ValueError:
        raise BadCursor(cursor) from None
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest) or score != score:
        raise BadCursor(cursor)
    return score, ENTRY + digest
