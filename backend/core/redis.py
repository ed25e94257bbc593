"""Redis clients: a real server when ``REDIS_URL`` is set, an in-process fakeredis otherwise.

Both are ``redis.asyncio.Redis`` to the code that uses them; only this module knows which.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


def create_redis(url: str | None) -> Redis:
    if url:
        # A restarted or failed-over Redis drops every connection; retrying on a fresh one
        # turns that into a short delay instead of an error in each client at once.
        return Redis.from_url(
            url,
            decode_responses=False,
            health_check_interval=30,
            retry=Retry(ExponentialBackoff(cap=2.0, base=0.1), retries=5),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
            socket_connect_timeout=5,
        )
    # Imported lazily: fakeredis (and lupa, for the Lua scripts saq runs) is only needed embedded.
    from fakeredis import FakeServer
    from fakeredis.aioredis import FakeRedis

    server = FakeServer(version=(7, 4))
    fake: Redis = FakeRedis(server=server, decode_responses=False, lua_modules=set())
    return fake
