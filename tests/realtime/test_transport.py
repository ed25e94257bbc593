"""The shared-frame write (``backend.realtime.transport``) on real sockets.

A real uvicorn serves the app with ``atelier serve``'s WebSocket options; events are published
on the real Redis channel as workers publish them. The slow-consumer tests use a client whose
kernel receive buffer is tiny and which stops reading, so the server's transport really fills.
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fastapi import FastAPI, WebSocket
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from backend.realtime import router as realtime_router
from backend.realtime.hub import Hub
from backend.realtime.transport import (
    WRITE_EXTENSION,
    RealtimeWebSocketProtocol,
    encode_text_frame,
)
from backend.tasks.events import CHANNEL
from tests.conftest import AppFactory
from tests.live import serve
from tests.realtime.test_ws import (
    GOOD_ORIGIN,
    TIMEOUT,
    LiveUser,
    eventually,
    live_app,  # noqa: F401 - fixture
    receive,
    receive_event,
    register,
    snapshot_ids,
)


class CountingProtocol(RealtimeWebSocketProtocol):
    """The production protocol, counting the frames that took the shared-frame write."""

    written = 0

    def write_frame(self, frame: bytes) -> bool:
        done = super().write_frame(frame)
        CountingProtocol.written += done
        return done


def event(user_id: uuid.UUID, n: int, padding: int = 0) -> str:
    task = {"n": n, "message": "x" * padding}
    return json.dumps({"user_id": str(user_id), "event": {"type": "task.updated", "task": task}})


async def read_until_closed(ws: ClientConnection) -> tuple[list[int], ConnectionClosed]:
    """The events' numbers a socket still receives, and how it ended."""
    seen: list[int] = []
    while True:
        try:
            message = await receive_event(ws)
        except ConnectionClosed as closed:
            return seen, closed
        seen.append(message["task"]["n"])


@asynccontextmanager
async def open_socket(
    base_url: str, user: LiveUser, *, receive_buffer: int | None = None, **options: Any
) -> AsyncIterator[ClientConnection]:
    sock = None
    if receive_buffer is not None:
        # Set before connecting, so the kernel never grows it: the server's sends back up soon.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.connect(("127.0.0.1", int(base_url.rsplit(":", 1)[1])))
        sock.setblocking(False)
    async with connect(
        base_url.replace("http://", "ws://", 1) + "/ws",
        additional_headers={"Cookie": user.cookie_header, "Origin": GOOD_ORIGIN},
        open_timeout=TIMEOUT,
        close_timeout=2,
        sock=sock,
        **options,
    ) as ws:
        yield ws


async def test_the_frame_write_is_offered_only_without_compression() -> None:
    seen: list[bool] = []
    app = FastAPI()

    @app.websocket("/ws")
    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        server = websocket.scope["extensions"].get(WRITE_EXTENSION)
        seen.append(server is not None)
        if server is not None:
            assert server["write"](encode_text_frame("straight é"))
        else:
            await websocket.send_text("through ASGI é")
        await websocket.close()

    url = "ws://127.0.0.1:{}/ws"
    for deflate, expected in ((False, "straight é"), (True, "through ASGI é")):
        async with serve(app, ws_per_message_deflate=deflate) as base_url:
            port = base_url.rsplit(":", 1)[1]
            # Offered compression, as browsers always do; the server decides.
            async with connect(url.format(port), compression="deflate") as ws:
                assert await asyncio.wait_for(ws.recv(), TIMEOUT) == expected
                negotiated = [type(e).__name__ for e in ws.protocol.extensions]
                assert negotiated == (["PerMessageDeflate"] if deflate else [])
    assert seen == [True, False]


async def test_events_take_the_frame_write_to_every_socket_of_the_user(
    live_app: AppFactory,  # noqa: F811 - fixture
    redis: Redis,
) -> None:
    CountingProtocol.written = 0
    app = live_app()
    async with serve(app, ws=CountingProtocol) as base_url:
        alice, bob = await register(base_url, "alice"), await register(base_url, "bob")
        async with (
            open_socket(base_url, alice) as a1,
            open_socket(base_url, alice) as a2,
            open_socket(base_url, bob) as b1,
        ):
            for ws in (a1, a2, b1):
                assert snapshot_ids(await receive(ws)) == []
            for n in range(5):
                await redis.publish(CHANNEL, event(alice.id, n))
            await redis.publish(CHANNEL, event(bob.id, 99))
            for ws in (a1, a2):
                assert [(await receive_event(ws))["task"]["n"] for _ in range(5)] == list(range(5))
            assert (await receive_event(b1))["task"]["n"] == 99
            # Bob's socket got only his event: the next frame it could see would be a ping.
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(b1.recv(), 0.3)
    assert CountingProtocol.written >= 11 - 2  # all, but a frame or two may take the queue


async def test_a_socket_that_stops_reading_is_closed_and_the_others_get_everything(
    live_app: AppFactory,  # noqa: F811 - fixture
    redis: Redis,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A send the socket cannot take for this long marks a slow consumer; its close frame,
    # which cannot be sent either, is given as long before the connection is dropped.
    monkeypatch.setattr(realtime_router, "SEND_TIMEOUT_SECONDS", 1.0)
    monkeypatch.setattr(realtime_router, "CLOSE_SEND_SECONDS", 1.0)
    app = live_app()
    hub = Hub(redis, queue_size=20)
    app.state.resources.hub = hub
    # ~12 MB, at a pace the socket's task keeps up with until the kernel's buffers for the
    # connection (up to 4 MB here) are full: then its queue overflows, and not even a close
    # frame fits any more.
    count, padding, pace = 200, 60_000, 0.01
    async with serve(app) as base_url:
        alice = await register(base_url, "alice")
        async with (
            open_socket(base_url, alice) as fast,
            # max_queue=1: the client library stops reading its socket after one frame.
            open_socket(base_url, alice, receive_buffer=4096, max_queue=1) as stuck,
        ):
            for ws in (fast, stuck):
                assert snapshot_ids(await receive(ws)) == []
            assert hub.subscriber_count == 2
            got: list[int] = []

            async def read_fast() -> None:
                while len(got) < count:
                    got.append((await receive_event(fast))["task"]["n"])

            reader = asyncio.create_task(read_fast())
            for n in range(count):
                await redis.publish(CHANNEL, event(alice.id, n, padding))
                await asyncio.sleep(pace)
            await asyncio.wait_for(reader, 30)
            assert got == list(range(count))  # in order, none lost, not held up by the other
            await eventually(lambda: hub.subscriber_count == 1, "the stuck socket was kept")
            # Our log lines go to stdout as JSON, one a line.
            output: list[str] = []

            def logged_drop() -> bool:
                output.append(capsys.readouterr().out)
                return '"message": "ws_dropped_unread"' in "".join(output)

            await eventually(logged_drop, "it was not dropped")

            # The server dropped the connection, as its close frame could not be sent: no
            # closing handshake, and the client learns it when it reads again.
            seen, closed = await asyncio.wait_for(read_until_closed(stuck), TIMEOUT)
            assert seen == list(range(len(seen)))
            assert len(seen) < count
            assert closed.rcvd is None


async def test_a_socket_that_falls_behind_then_reads_gets_1013(
    live_app: AppFactory,  # noqa: F811 - fixture
    redis: Redis,
) -> None:
    app = live_app()
    hub = Hub(redis, queue_size=4)
    app.state.resources.hub = hub
    count, padding = 120, 60_000
    async with serve(app) as base_url:
        alice = await register(base_url, "alice")
        async with open_socket(base_url, alice, receive_buffer=4096, max_queue=1) as slow:
            assert snapshot_ids(await receive(slow)) == []
            for n in range(count):
                await redis.publish(CHANNEL, event(alice.id, n, padding))
            await eventually(lambda: hub.subscriber_count == 0, "the slow socket was kept")
            # It reads again well within the close's grace: what was sent, then 1013.
            seen, closed = await asyncio.wait_for(read_until_closed(slow), TIMEOUT)
            assert seen == list(range(len(seen)))  # a prefix, in order
            assert len(seen) < count
            assert closed.rcvd is not None
            assert closed.rcvd.code == 1013
