"""A real uvicorn server in the test's event loop, for WebSockets and cross-instance tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI

from backend.realtime.transport import WEBSOCKET_OPTIONS
from tests.servers import free_port


@asynccontextmanager
async def serve(app: FastAPI, **options: Any) -> AsyncIterator[str]:
    """Serve ``app`` on a free loopback port; yields the base URL (``http://127.0.0.1:PORT``).
    ``options`` are more ``uvicorn.Config`` arguments (``atelier serve``'s HTTP limits…)."""
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        # The WebSocket options of ``atelier serve``, so tests take its realtime path.
        **{**WEBSOCKET_OPTIONS, **options},
    )
    server = uvicorn.Server(config)
    # The test process must keep its own signal handlers (pytest's Ctrl-C).
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    runner = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started:
                break
            if runner.done():
                runner.result()
            await asyncio.sleep(0.025)
        else:
            raise RuntimeError("uvicorn did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(runner, 15)
