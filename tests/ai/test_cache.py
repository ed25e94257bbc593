"""The AI result cache on real Redis: hits and misses, eviction of the oldest, key parts."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from backend.ai.cache import AiCache, cache_key


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
    keys = {cache_key(**base)}
    for field, other in [
        ("operation", "caption"),
        ("image_sha256", "b"),
        ("prompt", "blur"),
        ("reference_sha256", "r"),
        ("provider", "local"),
        ("model", "n"),
    ]:
        keys.add(cache_key(**{**base, field: other}))
    assert len(keys) == 7
