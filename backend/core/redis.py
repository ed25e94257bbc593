"""Redis clients: a real server when ``REDIS_URL`` is set, an in-process fakeredis otherwise.

Both are ``redis.asyncio.Redis`` to the code that uses them; only this module knows which.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Bounded, so a Redis that is down answers a request with a 503 within about a second instead
# of stalling it for the 5 s the retries used to add up to. The command timeout stays above the
# worker's blocking dequeue wait (1 s).
CONNECT_TIMEOUT_SECONDS = 1.0
COMMAND_TIMEOUT_SECONDS = 5.0
RETRIES = 2


def create_redis(url: str | None) -> Redis:
    if url:
        # A restarted or failed-over Redis drops every connection; retrying on a fresh one
        # turns that into a short delay instead of an error in each client at once.
        return Redis.from_url(
            url,
            decode_responses=False,
            health_check_interval=30,
            retry=Retry(ExponentialBackoff(cap=0.25, base=0.05), retries=RETRIES),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
            socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
            socket_timeout=COMMAND_TIMEOUT_SECONDS,
        )
    # Imported lazily: fakeredis (and lupa, for the Lua scripts saq runs) is only needed embedded.
    from fakeredis import FakeServer
    from fakeredis.aioredis import FakeRedis

    server = FakeServer(version=(7, 4))
    fake: Redis = FakeRedis(server=server, decode_responses=False, lua_modules=set())
    return fake
