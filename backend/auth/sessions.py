"""A per-instance cache of live sign-in sessions, kept honest by revocations over Redis.

Checking a cookie's session against the database cost a round trip on every request. Each API
instance instead remembers, for ``SESSION_CACHE_SECONDS``, who a session that it found live
belongs to. Whatever ends or changes a session or a user (logout, refresh reuse, an admin's role
or disable change, a password reset) publishes a revocation on Redis once its transaction has
committed; every instance's listener drops those entries and acknowledges, and the publisher
waits for those acknowledgements (up to ``ACK_WAIT_SECONDS``), so by the time a logout answers,
no instance still honours the session.

The cache is trusted only while its subscription is known to be alive (subscribed, and heard
from within ``TRUST_SECONDS`` thanks to periodic pings): with Redis down or the link silent,
every request goes to the database again, never to "trust". The TTL bounds what a revocation
that was missed anyway (published while this instance's link was half-open) can leave behind.
Open sockets (``watch``) have no TTL: each time the subscription comes (back) up, the sessions
and users they hold are checked against the database (``recheck``), and those that ended while
nothing could be heard are closed then.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from backend.auth.models import Role

log = structlog.get_logger(__name__)

CHANNEL = "atelier:auth:revocations"
ACK_WAIT_SECONDS = 1.0
# An idle subscription is pinged this often; one not heard from for TRUST_SECONDS is not
# trusted (a half-open TCP link reports nothing by itself) and is then re-established.
PING_SECONDS = 2.0
TRUST_SECONDS = 5.0
BACKOFF_MIN = 0.1
BACKOFF_MAX = 5.0
MAX_ENTRIES = 10_000


# (sessions, users) watched → (those of the sessions that have ended, those users gone).
Recheck = Callable[
    [set[uuid.UUID], set[uuid.UUID]], Awaitable[tuple[set[uuid.UUID], set[uuid.UUID]]]
]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, as the endpoints that need no ORM ``User`` see it (``UserOut``'s fields)."""

    id: uuid.UUID
    email: str
    display_name: str | None
    role: Role
    created_at: datetime


class SessionCache:
    """Live sessions of this instance (session id → its principal) and the revocation listener.

    ``ttl`` 0 turns the cache off: every request checks the database, as without it.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        ttl: float,
        max_entries: int = MAX_ENTRIES,
        recheck: Recheck | None = None,
    ) -> None:
        self._redis = redis
        self._recheck = recheck
        self._rechecking: asyncio.Task[None] | None = None
        self.ttl = ttl
        self._max_entries = max_entries
        self._entries: dict[uuid.UUID, tuple[Principal, float]] = {}
        # Bumped by every revocation and every (re)subscription: a database read that started
        # before one of them must not be cached, since it may predate the revocation.
        self.generation = 0
        self._live = False
        self._heard_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        # Long-lived holders of a session (WebSockets): each is told when a revocation names
        # its session or its user, here or, through the listener, on any instance.
        self._watchers: dict[asyncio.Event, tuple[uuid.UUID | None, uuid.UUID]] = {}

    # -- reading ---------------------------------------------------------------------------

    def trusted(self) -> bool:
        return self._live and time.monotonic() - self._heard_at < TRUST_SECONDS

    def get(self, session_id: uuid.UUID, user_id: uuid.UUID) -> Principal | None:
        if self.ttl <= 0:
            return None
        if self._task is None:
            self._start()
        if not self.trusted():
            return None
        entry = self._entries.get(session_id)
        if entry is None:
            return None
        principal, expires = entry
        if time.monotonic() >= expires or principal.id != user_id:
            self._entries.pop(session_id, None)
            return None
        return principal

    def put(self, session_id: uuid.UUID, principal: Principal, *, generation: int) -> None:
        """Remember a session read live from the database at ``generation``."""
        if self.ttl <= 0 or generation != self.generation or not self.trusted():
            return
        if len(self._entries) >= self._max_entries:
            del self._entries[next(iter(self._entries))]
        self._entries[session_id] = (principal, time.monotonic() + self.ttl)

    def __len__(self) -> int:
        return len(self._entries)

    @contextlib.contextmanager
    def watch(self, session_id: uuid.UUID | None, user_id: uuid.UUID) -> Iterator[asyncio.Event]:
        """An event set once a revocation names ``session_id`` (None: an API key's caller,
        ended only by a change to the user) or ``user_id``, for as long as the block runs."""
        if self._task is None:
            self._start()
        revoked = asyncio.Event()
        self._watchers[revoked] = (session_id, user_id)
        try:
            yield revoked
        finally:
            self._watchers.pop(revoked, None)

    # -- revoking --------------------------------------------------------------------------

    def forget(
        self, *, sessions: Iterable[uuid.UUID] = (), users: Iterable[uuid.UUID] = ()
    ) -> None:
        """Drop entries here, at once."""
        self.generation += 1
        ended = set(sessions)
        for session_id in ended:
            self._entries.pop(session_id, None)
        gone = set(users)
        if gone:
            for session_id in [s for s, (p, _) in self._entries.items() if p.id in gone]:
                del self._entries[session_id]
        for revoked, (held, holder) in self._watchers.items():
            if holder in gone or (held is not None and held in ended):
                revoked.set()

    async def revoke(
        self, *, sessions: Iterable[uuid.UUID] = (), users: Iterable[uuid.UUID] = ()
    ) -> None:
        """After a commit that ended sessions or changed users: forget them here, then on
        every instance, waiting for their acknowledgements."""
        sessions, users = list(sessions), list(users)
        self.forget(sessions=sessions, users=users)
        await publish_revocation(self._redis, sessions=sessions, users=users)

    # -- listening -------------------------------------------------------------------------

    def _start(self) -> None:
        with contextlib.suppress(RuntimeError):  # no running loop: stays off, never trusted
            self._task = asyncio.get_running_loop().create_task(self._listen())

    def _set_live(self, live: bool) -> None:
        # Either way what is cached may have missed revocations while the link was down.
        self._entries.clear()
        self.generation += 1
        self._live = live
        if live:
            self._heard_at = time.monotonic()

    async def _listen(self) -> None:
        backoff = BACKOFF_MIN
        while not self._closed:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(CHANNEL)
                pinged = False
                while not self._closed:
                    message = await pubsub.get_message(timeout=PING_SECONDS)
                    now = time.monotonic()
                    if message is None:
                        if now - self._heard_at >= TRUST_SECONDS:
                            raise TimeoutError("the revocation subscription went silent")
                        if not pinged and now - self._heard_at >= PING_SECONDS:
                            await pubsub.ping()
                            pinged = True
                        continue
                    self._heard_at, pinged = now, False
                    if message["type"] == "subscribe":
                        self._set_live(True)
                        backoff = BACKOFF_MIN
                        # Whatever was revoked while nothing could be heard never arrives:
                        # the open sockets' sessions are checked against the database instead.
                        self._start_recheck()
                    elif message["type"] == "message":
                        await self._apply(message["data"])
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, TimeoutError) as exc:
                if not self._closed:
                    log.warning("auth_revocations_lost", error=str(exc) or type(exc).__name__)
            finally:
                self._set_live(False)
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            if not self._closed:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)

    def _start_recheck(self) -> None:
        if self._recheck is None or not self._watchers:
            return
        if self._rechecking is not None and not self._rechecking.done():
            self._rechecking.cancel()
        # Beside the listener, which must go on hearing revocations while the database answers.
        self._rechecking = asyncio.get_running_loop().create_task(self._recheck_watchers())

    async def _recheck_watchers(self) -> None:
        assert self._recheck is not None
        held = list(self._watchers.values())
        sessions = {session for session, _ in held if session is not None}
        # An API key's caller is ended only by a change to its user.
        users = {user for session, user in held if session is None}
        try:
            ended, gone = await self._recheck(sessions, users)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - retried at the next (re)subscription
            log.warning("auth_recheck_failed", error=str(exc) or type(exc).__name__)
            return
        if ended or gone:
            log.info("auth_recheck_ended", sessions=len(ended), users=len(gone))
            self.forget(sessions=ended, users=gone)

    async def _apply(self, data: bytes | str) -> None:
        try:
            message = json.loads(data)
            sessions = [uuid.UUID(s) for s in message.get("sessions", [])]
            users = [uuid.UUID(u) for u in message.get("users", [])]
        except (ValueError, TypeError, AttributeError):
            # Unreadable: forget everything rather than risk keeping what it meant to revoke.
            self._entries.clear()
            self.generation += 1
            return
        self.forget(sessions=sessions, users=users)
        ack = message.get("ack")
        if isinstance(ack, str) and ack.startswith(ACK_PREFIX):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.rpush(ack, b"1")
                pipe.expire(ack, 60)
                await pipe.execute()

    async def close(self) -> None:
        self._closed = True
        if self._rechecking is not None:
            self._rechecking.cancel()
        task, self._task = self._task, None
        self._live = False
        if task is not None:
            task.cancel()
            # Bounded: a cancellation swallowed by a command in flight must not hang shutdown;
            # the loop also sees _closed within PING_SECONDS.
            await asyncio.wait({task}, timeout=PING_SECONDS + 1)


ACK_PREFIX = "atelier:auth:ack:"


async def publish_revocation(
    redis: Redis,
    *,
    sessions: Iterable[uuid.UUID] = (),
    users: Iterable[uuid.UUID] = (),
    wait: float = ACK_WAIT_SECONDS,
) -> None:
    """Tell every instance's cache; returns once each listener that received it has applied
    it, or after ``wait`` seconds. A Redis failure is logged, not raised: the change is already
    committed, and caches that cannot hear it either are not trusted (Redis down) or expire
    within their TTL."""
    ack = f"{ACK_PREFIX}{uuid.uuid4().hex}"
    payload = json.dumps(
        {"sessions": [str(s) for s in sessions], "users": [str(u) for u in users], "ack": ack}
    )
    try:
        receivers = int(await redis.publish(CHANNEL, payload))
        deadline = time.monotonic() + wait
        acked = 0
        while acked < receivers:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning("auth_revocation_unacknowledged", receivers=receivers, acked=acked)
                break
            if await redis.blpop([ack], timeout=max(remaining, 0.01)) is not None:
                acked += 1
            else:
                # fakeredis (embedded mode) answers a blocking pop at once when it is empty.
                await asyncio.sleep(0.005)
        await redis.delete(ack)
    except (RedisError, OSError) as exc:
        log.warning("auth_revocation_not_published", error=str(exc) or type(exc).__name__)
