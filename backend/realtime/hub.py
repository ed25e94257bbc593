"""One Redis subscription per API process, fanned out to that process's WebSockets.

Workers publish every task change on ``backend.tasks.events.CHANNEL``, tagged with the owner.
A ``Hub`` holds a single pub/sub connection (opened when the first socket subscribes) and hands
each event to the sockets of that owner only, through one bounded queue per socket.

Delivery is best effort; the database is the truth. Whenever the Redis subscription has been
re-established (a Redis restart, a killed connection, a dead link found by the idle PING) events
may have been lost in between, so every live subscription receives ``{"type": "resync"}`` and
its socket sends a fresh snapshot. A socket too slow to drain its queue is ended with
``SlowConsumer`` rather than letting its queue grow or stall the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from backend.tasks.events import CHANNEL, decode_event

log = structlog.get_logger(__name__)

Message = dict[str, Any]

RESYNC = "resync"
DEFAULT_QUEUE_SIZE = 256
# How long a new socket waits for the subscription before it reads its snapshot anyway; if Redis
# comes back later, the socket gets a resync then.
DEFAULT_READY_TIMEOUT = 5.0
# A subscription silent this long is sent a PING; no answer within as long again means the link
# is dead (a half-open TCP connection never reports an error by itself).
DEFAULT_IDLE_SECONDS = 30.0
CLOSE_WAIT_SECONDS = 2.0
BACKOFF_MIN = 0.1
BACKOFF_MAX = 10.0


class SubscriptionClosed(Exception):
    """The hub no longer delivers to this subscription."""


class SlowConsumer(SubscriptionClosed):
    """The socket did not keep up with its events; it should close (1013, try again later)."""


class HubClosed(SubscriptionClosed):
    """The process is shutting down (1012, service restart)."""


class Subscription:
    """The events of one socket's user, in order, behind a bounded queue."""

    def __init__(self, user_id: uuid.UUID, maxsize: int) -> None:
        self.user_id = user_id
        # None is the end marker; it wakes a waiting get() once the subscription has ended.
        self._queue: asyncio.Queue[Message | None] = asyncio.Queue(maxsize)
        self._ended: type[SubscriptionClosed] | None = None
        # Set once the socket may have read a snapshot: only such subscriptions need a resync.
        self.live = False

    async def get(self) -> Message:
        """The next event or resync marker; raises a ``SubscriptionClosed`` once ended."""
        if self._ended is not None:
            raise self._ended()
        item = await self._queue.get()
        if item is None:
            assert self._ended is not None
            raise self._ended()
        return item

    def clear(self) -> None:
        """Drop what is pending: call right before reading a snapshot, which supersedes it."""
        while not self._queue.empty():
            self._queue.get_nowait()
        if self._ended is not None:
            self._queue.put_nowait(None)

    def pending(self) -> int:
        return self._queue.qsize()

    def _offer(self, message: Message) -> bool:
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            return False
        return True

    def _resync(self) -> None:
        # Pending events are older than the snapshot the marker triggers, so they can go; this
        # also means a resync always fits, even in a full queue.
        self.clear()
        if self._ended is None:
            self._queue.put_nowait({"type": RESYNC})

    def _end(self, reason: type[SubscriptionClosed]) -> None:
        if self._ended is None:
            self._ended = reason
            self.clear()


class Hub:
    """Routes task events from Redis to local subscribers by owner.

    ``async with hub.subscribe(user_id) as sub:`` registers a socket; once it has entered, the
    Redis subscription is live (or ``ready_timeout`` has passed), so a snapshot read afterwards
    misses no event. ``await sub.get()`` yields ``{"type": "task.updated", ...}`` events and
    ``{"type": "resync"}`` markers. ``await hub.close()`` stops the reader and ends every
    subscription with ``HubClosed``.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        ready_timeout: float = DEFAULT_READY_TIMEOUT,
        idle_seconds: float = DEFAULT_IDLE_SECONDS,
    ) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self._redis = redis
        self._queue_size = queue_size
        self._ready_timeout = ready_timeout
        self._idle_seconds = idle_seconds
        self._subscribers: dict[uuid.UUID, set[Subscription]] = {}
        self._subscribed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._failures = 0
        self._closed = False

    @property
    def subscriber_count(self) -> int:
        return sum(len(subs) for subs in self._subscribers.values())

    @property
    def connected(self) -> bool:
        return self._subscribed.is_set()

    @asynccontextmanager
    async def subscribe(self, user_id: uuid.UUID) -> AsyncIterator[Subscription]:
        if self._closed:
            raise HubClosed("the hub is closed")
        sub = Subscription(user_id, self._queue_size)
        self._subscribers.setdefault(user_id, set()).add(sub)
        try:
            self._ensure_reader()
            if not self._subscribed.is_set():
                try:
                    async with asyncio.timeout(self._ready_timeout):
                        await self._subscribed.wait()
                except TimeoutError:
                    log.warning("realtime_hub_not_ready", waited_seconds=self._ready_timeout)
            sub.live = True
            yield sub
        finally:
            self._discard(sub)

    async def close(self) -> None:
        self._closed = True
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            # Bounded: a Redis read in flight can swallow the cancel; the reader then still
            # stops at its next check of ``_closed``, but shutdown does not wait for that.
            await asyncio.wait({reader}, timeout=CLOSE_WAIT_SECONDS)
        for subs in self._subscribers.values():
            for sub in subs:
                sub._end(HubClosed)
        self._subscribers.clear()

    def _ensure_reader(self) -> None:
        if self._reader is None or self._reader.done():
            # A fresh context: the reader outlives the request that started it, and must not log
            # that request's id forever after.
            self._reader = asyncio.create_task(
                self._run(), name="realtime-hub-reader", context=contextvars.Context()
            )

    def _discard(self, sub: Subscription) -> None:
        subs = self._subscribers.get(sub.user_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subscribers[sub.user_id]

    async def _run(self) -> None:
        while not self._closed:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(CHANNEL)
                await self._read(pubsub)
            except (RedisError, OSError) as exc:
                log.warning("realtime_hub_disconnected", error=str(exc) or type(exc).__name__)
            except Exception:
                # A bug here must not silently end realtime delivery for the whole process.
                log.exception("realtime_hub_failed")
            finally:
                self._subscribed.clear()
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
            if self._closed:
                return
            self._failures += 1
            delay = min(BACKOFF_MAX, BACKOFF_MIN * 2 ** (self._failures - 1))
            # Jitter, so that every API instance does not hit a restarted Redis at once.
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    async def _read(self, pubsub: PubSub) -> None:
        """Deliver messages until the connection fails (raises) or the hub is closed."""
        loop = asyncio.get_running_loop()
        last_heard = loop.time()
        ping_sent_at: float | None = None
        while not self._closed:
            message = await pubsub.get_message(timeout=self._idle_seconds)
            now = loop.time()
            if message is None:
                # Also returned early for redis-py's own health-check replies: go by the clock.
                if now - last_heard < self._idle_seconds:
                    continue
                if ping_sent_at is None:
                    await pubsub.ping()
                    ping_sent_at = now
                elif now - ping_sent_at >= self._idle_seconds:
                    raise RedisConnectionError("no answer to PING on the event subscription")
                continue
            last_heard, ping_sent_at = now, None
            kind = message.get("type")
            if kind == "message":
                self._dispatch(message["data"])
            elif kind == "subscribe":
                # Also seen when redis-py reconnected and resubscribed by itself, which it does
                # without raising: this confirmation is the one reliable sign of a gap.
                self._on_subscribed()

    def _on_subscribed(self) -> None:
        self._failures = 0
        stale = [sub for subs in self._subscribers.values() for sub in subs if sub.live]
        for sub in stale:
            sub._resync()
        self._subscribed.set()
        log.info("realtime_hub_subscribed", channel=CHANNEL, resynced=len(stale))

    def _dispatch(self, raw: bytes | str) -> None:
        try:
            user_id, event = decode_event(raw)
            if not isinstance(event.get("type"), str):
                raise ValueError("event without a type")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("realtime_event_malformed", error=str(exc), preview=repr(raw[:120]))
            return
        for sub in list(self._subscribers.get(user_id, ())):
            if not sub._offer(event):
                log.warning("realtime_slow_consumer", user_id=str(user_id))
                sub._end(SlowConsumer)
                self._discard(sub)
