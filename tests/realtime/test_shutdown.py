"""``atelier serve`` on SIGTERM closes every open socket with 1012 (service restart), promptly.

The real command in a process of its own (its WebSocket protocol, signal handling and graceful
shutdown as deployed), on the test Postgres and Redis.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from backend.config import Settings
from backend.core.db import Database
from tests.bench.test_fanout_bench import server_env
from tests.bench.test_task_engine_bench import register_cookie
from tests.realtime.test_ws import TIMEOUT, receive, snapshot_ids
from tests.servers import free_port
from tests.tasks.conftest import ROOT

SOCKETS = 20


async def wait_ready(base_url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            try:
                await client.get(base_url + "/healthz")
                return
            except httpx.TransportError:
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, "atelier serve did not start"
                await asyncio.sleep(0.1)


async def closed_code(ws: ClientConnection) -> int | None:
    try:
        while True:
            await ws.recv()
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else None


async def test_sigterm_closes_every_socket_with_1012(
    settings: Settings,
    committed_database: Database,  # noqa: ARG001 - migrated tables
    tmp_path: Path,
) -> None:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "backend.cli", "serve", "--host", "127.0.0.1"]
            + ["--port", str(port)],
            cwd=ROOT,
            env=server_env(settings, "WARNING"),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        await wait_ready(base_url, proc, log)
        cookie = await register_cookie(base_url)
        url = base_url.replace("http://", "ws://", 1) + "/ws"
        headers = {"Cookie": cookie}  # no Origin: a non-browser client
        sockets = [
            await connect(url, additional_headers=headers, open_timeout=TIMEOUT)
            for _ in range(SOCKETS)
        ]
        for ws in sockets:
            assert snapshot_ids(await receive(ws)) == []
        stopped = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        codes = await asyncio.wait_for(
            asyncio.gather(*(closed_code(ws) for ws in sockets)), TIMEOUT
        )
        assert codes == [1012] * SOCKETS
        # uvicorn re-raises the signal once it has shut down, so the exit status says SIGTERM.
        assert proc.wait(10) in (0, -signal.SIGTERM)
        assert time.monotonic() - stopped < 8
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
