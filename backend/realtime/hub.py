"""One Redis subscription per API process, fanned out to that process's WebSockets.

Workers publish every task change on ``backend.tasks.events.CHANNEL``, tagged with the owner.
A ``Hub`` holds a single pub/sub connection (opened when the first socket subscribes) and hands
each event to the sockets of that owner only: decoded and encoded once (down to the WebSocket
frame's bytes), then written straight to every socket that can take it at once, or else through
that socket's bounded queue.

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
import json
import random
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from backend.realtime.transport import encode_text_frame
from backend.tasks.events import CHANNEL, decode_event, parse_cursor

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


@dataclass(frozen=True, slots=True)
class Frame:
    """One event as every socket of its user receives it: decoded, checked and encoded once."""

    message: Message
    text: str
    # The event's resume cursor, parsed once: how far a socket that got this frame is current.
    cursor: datetime | None
    # ``text`` as one server-to-client WebSocket frame, the same bytes for every socket.
    wire: bytes

    @classmethod
    def of(cls, message: Message, text: str, cursor: datetime | None = None) -> Frame:
        return cls(message, text, cursor, encode_text_frame(text))


RESYNC_FRAME = Frame.of({"type": RESYNC}, json.dumps({"type": RESYNC}))
# Sends one text frame (a socket's ``send_text``).
Sender = Callable[[str], Coroutine[Any, Any, None]]
# Hands a frame to a socket without waiting: True if it is on its way, False if the socket
# cannot take it now (it is then queued); raises if the socket has gone. See ``Subscription.get``.
DirectWrite = Callable[[Frame], bool]


def write_directly(write: Callable[[bytes], bool]) -> DirectWrite:
    """A socket's direct path through the server's frame write (``transport.WRITE_EXTENSION``):
    the frame's shared bytes go into its transport, no coroutine, no ASGI send."""

    def direct(frame: Frame) -> bool:
        return write(frame.wire)

    return direct


def send_directly(send: Sender) -> DirectWrite:
    """A socket's direct path through ASGI, for servers without the frame write: the send is
    run up to its first wait, without a task switch, and abandoned there if it would wait."""

    def direct(frame: Frame) -> bool:
        coro = send(frame.text)
        try:
            coro.send(None)
        except StopIteration:
            return True
        # The transport is paused because the client reads slowly. uvicorn's send waits for
        # writability before it writes anything, so closing it here drops nothing.
        coro.close()
        return False

    return direct


class Subscription:
    """The events of one socket's user, in order, behind a bounded queue.

    While the socket's task waits in ``get(direct=...)`` with nothing queued, the hub hands a
    frame straight to ``direct`` from its own reader: no queue, no wake-up of the socket's task,
    no per-socket encoding. Anything else (the socket's task is busy with a snapshot or a send,
    or the client reads slowly) goes through the queue, so nothing overtakes what is queued.
    """

    def __init__(self, user_id: uuid.UUID, maxsize: int) -> None:
        self.user_id = user_id
        self._maxsize = maxsize
        self._items: deque[Frame] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._direct: DirectWrite | None = None
        self._ended: type[SubscriptionClosed] | None = None
        # A direct send that failed (the client has gone): raised by the next ``get``.
        self._error: Exception | None = None
        # Set once the socket may have read a snapshot: only such subscriptions need a resync.
        self.live = False
        # The newest point in time the socket is known to be current as of (snapshot, cursors).
        self.position: datetime | None = None

    async def get(self, direct: DirectWrite | None = None) -> Frame:
        """The next frame to send, or ``RESYNC_FRAME``; raises a ``SubscriptionClosed`` once
        ended. While it waits, frames may instead be sent through ``direct`` by the hub."""
        while True:
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            if self._ended is not None:
                raise self._ended()
            if self._items:
                return self._items.popleft()
            self._waiter = asyncio.get_running_loop().create_future()
            self._direct = direct
            try:
                await self._waiter
            finally:
                self._waiter = self._direct = None

    def delivered(self, frame: Frame) -> None:
        """Record that ``frame`` reached the socket."""
        if frame.cursor is not None and (self.position is None or frame.cursor > self.position):
            self.position = frame.cursor

    def clear(self) -> None:
        """Drop what is pending: call right before reading a snapshot, which supersedes it."""
        self._items.clear()

    def pending(self) -> int:
        return len(self._items)

    def _wake(self) -> None:
        # Whatever woke the task is handled by it first: no direct send may overtake it.
        self._direct = None
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _offer(self, frame: Frame) -> bool:
        if self._ended is not None:
            return True
        if self._direct is not None and not self._items and self._send_now(self._direct, frame):
            return True
        if len(self._items) >= self._maxsize:
            return False
        self._items.append(frame)
        self._wake()
        return True

    def _send_now(self, direct: DirectWrite, frame: Frame) -> bool:
        """Send without a task switch if the socket can take it at once; False if it cannot."""
        try:
            sent = direct(frame)
        except Exception as exc:
            # The client has gone (or the socket broke): its own task raises this and ends.
            self._error = exc
            self._wake()
            return True
        if sent:
            self.delivered(frame)
            return True
        # The frame is queued and the socket's task sends it when it can.
        self._wake()
        return False

    def _resync(self) -> None:
        # Pending events are older than the snapshot the marker triggers, so they can go; this
        # also means a resync always fits, even in a full queue.
        self.clear()
        if self._ended is None:
            self._items.append(RESYNC_FRAME)
            self._wake()

    def _end(self, reason: type[SubscriptionClosed]) -> None:
        if self._ended is None:
            self._ended = reason
            self.clear()
            self._wake()


class Hub:
    """Routes task events from Redis to local subscribers by owner.

    ``async with hub.subscribe(user_id) as sub:`` registers a socket; once it has entered, the
    Redis subscription is live (or ``ready_timeout`` has passed), so a snapshot read afterwards
    misses no event. ``await sub.get()`` yields ``Frame``s of ``{"type": "task.updated", ...}``
    events and ``RESYNC_FRAME`` markers. ``await hub.close()`` stops the reader and ends every
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
            cursor = event.get("cursor")
            frame_cursor = parse_cursor(cursor) if isinstance(cursor, str) else None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("realtime_event_malformed", error=str(exc), preview=repr(raw[:120]))
            return
        subs = self._subscribers.get(user_id)
        if not subs:
            return
        # Encoded once for all of the user's sockets (the same form as ``send_json``).
        text = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
        frame = Frame.of(event, text, frame_cursor)
        for sub in list(subs):
            if not sub._offer(frame):
                log.warning("realtime_slow_consumer", user_id=str(user_id))
                sub._end(SlowConsumer)
                self._discard(sub)
