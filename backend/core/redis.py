"""Redis clients: a real server when ``REDIS_URL`` is set, an in-process fakeredis otherwise.

Both are ``redis.asyncio.Redis`` to the code that uses them; only this module knows which.
"""

from __future__ import annotations

from redis.asyncio import Redis


def create_redis(url: str | None) -> Redis:
    if url:
        return Redis.from_url(url, decode_responses=False, health_check_interval=30)
    # Imported lazily: fakeredis (and lupa, for the Lua scripts saq runs) is only needed embedded.
    from fakeredis import FakeServer
    from fakeredis.aioredis import FakeRedis

    server = FakeServer(version=(7, 4))
    fake: Redis = FakeRedis(server=server, decode_responses=False, lua_modules=set())
    return fake
