"""The server process of the fan-out and request-cost benchmarks: Atelier, or a bare reference.

``python -m tests.bench.fanout_server atelier|bare --port P --stats FILE [--gc default|tuned]``

- ``atelier``: the real application (``create_app`` from the ``ATELIER_*`` environment), its
  ``/ws`` endpoint authenticated by cookie, on the same uvicorn configuration as
  ``atelier serve``.
- ``bare``: the reference, a minimal FastAPI app on the same uvicorn: one Redis subscription to
  the same channel, ``/ws?user=<id>`` without authentication, and each event decoded once,
  re-encoded once and sent as text to that user's sockets in a plain loop; and ``GET
  /api/bare``, a FastAPI endpoint with no dependency answering a small JSON object.

Both record their full garbage collections (wall-clock start and duration) and, for each
benchmark event, when it left Redis for the app and when its last direct send returned
(wall-clock ns, keyed by the send time the event carries), and write them to ``--stats`` on
exit: the benchmark counts the collections inside its measured windows and splits each event's
latency into publish → app, app → written, written → client.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import json
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from redis.asyncio import Redis

from backend.core.gctune import tune_gc
from backend.realtime.transport import WEBSOCKET_OPTIONS
from backend.tasks.events import CHANNEL

# The send time a benchmark event carries (``tests.bench.kinds.progress_message``).
SENT = re.compile(rb"bench i=\d+ t=(\d+)")
# (send time, handed to the app, all direct sends returned), all ``time.time_ns()``.
EventTimes = list[tuple[int, int, int]]


def note_event(into: EventTimes, raw: bytes, got_ns: int) -> None:
    found = SENT.search(raw)
    if found is not None:
        into.append((int(found.group(1)), got_ns, time.time_ns()))


def time_hub_events(into: EventTimes) -> None:
    """Time Atelier's hub from the outside: the production code carries no benchmark hooks."""
    from backend.realtime.hub import Hub

    dispatch = Hub._dispatch

    def timed(self: Hub, raw: bytes | str) -> None:
        got_ns = time.time_ns()
        dispatch(self, raw)
        if isinstance(raw, bytes):
            note_event(into, raw, got_ns)

    Hub._dispatch = timed  # type: ignore[method-assign]


def bare_app(redis_url: str, times: EventTimes) -> FastAPI:
    sockets: dict[uuid.UUID, set[WebSocket]] = {}

    async def fan_out() -> None:
        client = Redis.from_url(redis_url)
        pubsub = client.pubsub()
        await pubsub.subscribe(CHANNEL)
        try:
            while True:
                message = await pubsub.get_message(timeout=30.0)
                if message is None or message["type"] != "message":
                    continue
                got_ns = time.time_ns()
                data = json.loads(message["data"])
                text = json.dumps(data["event"])
                for ws in list(sockets.get(uuid.UUID(data["user_id"]), ())):
                    with contextlib.suppress(Exception):
                        await ws.send_text(text)
                note_event(times, message["data"], got_ns)
        finally:
            await pubsub.aclose()
            await client.aclose()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        reader = asyncio.create_task(fan_out())
        yield
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)

    app = FastAPI(lifespan=lifespan)

    @app.get("/api/bare")
    async def bare_endpoint() -> dict[str, Any]:
        # The request-cost benchmark's reference: routing, one dependency-free endpoint, JSON.
        return {"items": [], "next_cursor": None}

    @app.websocket("/ws")
    async def ws(websocket: WebSocket, user: uuid.UUID) -> None:
        await websocket.accept()
        mine = sockets.setdefault(user, set())
        mine.add(websocket)
        try:
            await websocket.send_text(json.dumps({"type": "snapshot", "tasks": []}))
            while (await websocket.receive())["type"] != "websocket.disconnect":
                pass
        except WebSocketDisconnect:
            pass
        finally:
            mine.discard(websocket)

    return app


def track_full_gcs(into: list[tuple[float, float]]) -> None:
    started = 0.0

    def callback(phase: str, info: dict[str, int]) -> None:
        nonlocal started
        if phase == "start":
            started = time.perf_counter()
        elif info["generation"] == 2:
            into.append((time.time(), (time.perf_counter() - started) * 1000))

    gc.callbacks.append(callback)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("app", choices=["atelier", "bare"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--stats", required=True)
    parser.add_argument("--redis-url", default="")
    parser.add_argument("--gc", choices=["default", "tuned"], default="tuned")
    # For finding hot spots only (it slows everything down): cProfile stats written on exit.
    parser.add_argument("--profile", default="")
    args = parser.parse_args(argv)

    app: Any
    times: EventTimes = []
    if args.app == "atelier":
        from backend.main import create_app

        app = create_app()
        time_hub_events(times)
    else:
        app = bare_app(args.redis_url, times)
    if args.gc == "tuned":
        # What ``atelier serve`` does once the application is built.
        tune_gc()
    full_gcs: list[tuple[float, float]] = []
    track_full_gcs(full_gcs)
    # The transport options of ``atelier serve`` (backend/cli.py), for both apps.
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=args.port,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        **WEBSOCKET_OPTIONS,
        timeout_graceful_shutdown=8,
        http="h11",
    )
    profiler = cProfile.Profile() if args.profile else None
    try:
        if profiler is not None:
            profiler.enable()
        uvicorn.Server(config).run()
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
        Path(args.stats).write_text(json.dumps({"full_gcs": full_gcs, "events": times}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
