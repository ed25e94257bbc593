"""The AI result cache on real Redis: hits and misses, eviction of the oldest, key parts, the
admin's entry list and memory figures (and the same on the embedded in-process Redis)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from backend.ai.cache import META, AiCache, BadCursor, CacheEntry, cache_key
from backend.core.redis import create_redis
from tests.auth.test_router import assert_problem
from tests.conftest import SignedIn


async def test_hits_misses_and_eviction(redis: Redis) -> None:
    cache = AiCache(redis, ttl_seconds=60, max_entries=2)
    keys = [
        cache_key(operation="caption", image_sha256=str(i), provider="local", model="local")
        for i in range(3)
    ]
    assert await cache.get(keys[0]) is None
    for i, key in enumerate(keys):
        await cache.put(key, f"caption {i}".encode())
        await asyncio.sleep(0.01)  # distinct insertion times
    # Bounded: the oldest went first.
    assert await cache.get(keys[0]) is None
    assert await cache.get(keys[2]) == b"caption 2"
    status = await cache.status()
    assert (status.entries, status.hits, status.misses) == (2, 1, 2)
    assert status.hit_rate == round(1 / 3, 4)


async def test_entries_expire(redis: Redis) -> None:
    cache = AiCache(redis, ttl_seconds=1, max_entries=10)
    key = cache_key(
        operation="edit", image_sha256="a", prompt="sepia", provider="local", model="local"
    )
    await cache.put(key, b"x")
    assert await cache.get(key) == b"x"
    await asyncio.sleep(1.2)
    assert await cache.get(key) is None
    assert (await cache.status()).entries == 0


def test_every_part_changes_the_key() -> None:
    base = {
        "operation": "edit",
        "image_sha256": "a",
        "prompt": "sepia",
        "reference_sha256": "",
        "provider": "gemini",
        "model": "m",
    }
    keys = {cache_key(**base).redis_key}
    for field, other in [
        ("operation", "caption"),
        ("image_sha256", "b"),
        ("prompt", "blur"),
        ("reference_sha256", "r"),
        ("provider", "local"),
        ("model", "n"),
    ]:
        keys.add(cache_key(**{**base, field: other}).redis_key)
    assert len(keys) == 7


async def fill(cache: AiCache, count: int) -> list[str]:
    """``count`` entries, oldest first; returns their digests."""
    digests = []
    for i in range(count):
        key = cache_key(
            operation="edit" if i % 2 else "caption",
            image_sha256=hashlib.sha256(str(i).encode()).hexdigest(),
            prompt="sepia" if i % 2 else "",
            provider="openai",
            model="gpt-image-1",
        )
        await cache.put(key, b"x" * (100 + i))
        digests.append(key.digest)
    return digests


async def all_pages(cache: AiCache, limit: int) -> list[list[CacheEntry]]:
    pages, cursor = [], None
    while True:
        page = await cache.entries(limit=limit, cursor=cursor)
        pages.append(page.entries)
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor


async def test_entries_list_key_parts_size_age_ttl_and_hits(redis: Redis) -> None:
    cache = AiCache(redis, ttl_seconds=600, max_entries=100)
    image_sha = hashlib.sha256(b"image").hexdigest()
    key = cache_key(
        operation="edit",
        image_sha256=image_sha,
        prompt="add a party hat",
        reference_sha256="ab" * 32,
        provider="openai",
        model="gpt-image-1",
    )
    await cache.put(key, b"p" * 1234)
    for _ in range(3):
        assert await cache.get(key) == b"p" * 1234
    await asyncio.sleep(0.05)

    [entry] = (await cache.entries(limit=10)).entries

    assert entry.key == key.digest
    assert (entry.kind, entry.provider, entry.model) == ("edit", "openai", "gpt-image-1")
    assert entry.image_sha256_prefix == image_sha[:12]
    assert entry.reference_sha256_prefix == "ab" * 6
    assert entry.prompt_hash == hashlib.sha256(b"add a party hat").hexdigest()[:12]
    assert entry.size_bytes == 1234
    assert entry.hits == 3
    assert 0.05 <= entry.age_seconds < 60
    assert 540 < entry.ttl_seconds <= 600
    # Real Redis counts the value, its bookkeeping hash and overhead.
    assert entry.memory_bytes is not None
    assert entry.memory_bytes > 1234
    # The prompt itself is never stored in the bookkeeping.
    meta = await redis.hgetall(META + key.digest)
    assert "add a party hat" not in repr(meta)


async def test_entries_page_newest_first_with_a_stable_cursor(redis: Redis) -> None:
    cache = AiCache(redis, ttl_seconds=600, max_entries=100)
    digests = await fill(cache, 7)

    pages = await all_pages(cache, limit=3)

    assert [len(page) for page in pages] == [3, 3, 1]
    assert [e.key for page in pages for e in page] == digests[::-1]
    # A new entry does not shift the pages after the first.
    first = await cache.entries(limit=3)
    await fill(cache, 1)
    assert first.next_cursor is not None
    second = await cache.entries(limit=3, cursor=first.next_cursor)
    assert [e.key for e in second.entries] == digests[::-1][3:6]


async def test_entries_written_in_the_same_instant_are_each_listed_once(redis: Redis) -> None:
    cache = AiCache(redis, ttl_seconds=600, max_entries=100)
    digests = await fill(cache, 5)
    now = time.time()
    # Same score for all: the cursor must still step through them without loss or repeat.
    await redis.zadd(
        "atelier:ai-cache:index", {f"atelier:ai-cache:entry:{d}": now for d in digests}
    )
    listed = [e.key for page in await all_pages(cache, limit=2) for e in page]
    assert sorted(listed) == sorted(digests)
    assert len(listed) == 5


@pytest.mark.parametrize("cursor", ["nonsense", "1.5_abc", "nan_" + "a" * 64, "_" + "a" * 64])
async def test_a_made_up_cursor_is_refused(redis: Redis, cursor: str) -> None:
    with pytest.raises(BadCursor):
        await AiCache(redis, ttl_seconds=60, max_entries=10).entries(limit=5, cursor=cursor)


async def test_memory_is_summed_from_redis(redis: Redis) -> None:
    cache = AiCache(redis, ttl_seconds=600, max_entries=100)
    empty = await cache.memory()
    await fill(cache, 4)
    memory = await cache.memory()
    listed = sum(e.memory_bytes or 0 for e in (await cache.entries(limit=10)).entries)
    assert memory.method == "memory_usage"
    assert memory.used_bytes > listed > 4 * 100  # the entries plus the index
    assert empty.used_bytes == 0
    assert memory.redis_used_bytes is not None
    assert memory.redis_used_bytes > memory.used_bytes


async def test_evicted_entries_take_their_bookkeeping_with_them(redis: Redis) -> None:
    cache = AiCache(redis, ttl_seconds=600, max_entries=2)
    digests = await fill(cache, 3)
    assert not await redis.exists(META + digests[0])
    assert await redis.exists(META + digests[2])
    assert 0 < await redis.ttl(META + digests[2]) <= 600


@pytest.fixture
async def embedded_redis() -> AsyncIterator[Redis]:
    client = create_redis(None)
    yield client
    await client.aclose()


async def test_the_embedded_redis_lists_entries_and_estimates_memory(
    embedded_redis: Redis,
) -> None:
    """The in-process Redis has neither MEMORY nor INFO: sizes come from the values."""
    cache = AiCache(embedded_redis, ttl_seconds=600, max_entries=100)
    await fill(cache, 3)
    key = cache_key(operation="caption", image_sha256="0", provider="openai", model="m")
    await cache.get(key)
    pages = await all_pages(cache, limit=2)
    entries = [e for page in pages for e in page]
    assert [len(page) for page in pages] == [2, 1]
    assert all(e.memory_bytes is None for e in entries)
    memory = await cache.memory()
    assert (memory.method, memory.redis_used_bytes) == ("value_bytes", None)
    assert memory.used_bytes == sum(e.size_bytes for e in entries) == 100 + 101 + 102


async def test_cache_status_over_http(admin: SignedIn, alice: SignedIn, redis: Redis) -> None:
    cache = AiCache(redis, ttl_seconds=3600, max_entries=10_000)
    digests = await fill(cache, 3)
    first = await admin.client.get("/api/cache/status", params={"limit": 2})
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["entries"] == 3
    assert [e["key"] for e in body["items"]] == digests[::-1][:2]
    assert set(body["items"][0]) == {
        "key",
        "kind",
        "provider",
        "model",
        "image_sha256_prefix",
        "prompt_hash",
        "reference_sha256_prefix",
        "size_bytes",
        "memory_bytes",
        "age_seconds",
        "ttl_seconds",
        "hits",
    }
    assert body["memory"]["method"] == "memory_usage"
    assert body["memory"]["used_bytes"] > 0
    rest = await admin.client.get(
        "/api/cache/status", params={"limit": 2, "cursor": body["next_cursor"]}
    )
    assert [e["key"] for e in rest.json()["items"]] == digests[:1]
    assert rest.json()["next_cursor"] is None
    assert_problem(
        await admin.client.get("/api/cache/status", params={"cursor": "bogus"}),
        422,
        "cache.bad_cursor",
    )
    assert_problem(
        await admin.client.get("/api/cache/status", params={"limit": 0}), 422, "request.validation"
    )
    assert_problem(await alice.client.get("/api/cache/status"), 403, "auth.admin_required")
