"""Browser fixtures: the whole stack on a live port and Debian's Chromium driven by Playwright.

The server's port is chosen before the app is built, because the app must know its own origin:
the local storage backend signs upload URLs under ``public_base_url`` and ``/ws`` checks the
browser's ``Origin`` against ``allowed_origins``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from fastapi import FastAPI
from playwright.async_api import Browser, async_playwright

from backend.tasks.worker import running_worker
from tests.conftest import IN_CI, AppFactory
from tests.live import serve
from tests.servers import free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing (scripts/install-system-deps.sh installs it)"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def live_url(
    make_live_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[str]:
    """The app with a worker on committed Postgres and Redis; yields its base URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = make_live_app(env="dev", public_base_url=base, allowed_origins=[base])
    # serve() picks its own free port; make it pick the one the app was configured for.
    monkeypatch.setattr("tests.live.free_port", lambda: port)
    async with running_worker(app.state.resources), serve(app) as served:
        assert served == base
        yield base


@pytest.fixture
def screenshots() -> Path | None:
    """Where to save the README screenshots, only when ATELIER_SCREENSHOTS=1 asks for them."""
    if os.environ.get("ATELIER_SCREENSHOTS") != "1":
        return None
    return Path(__file__).resolve().parents[2] / "docs"


class RestartableServer:
    """The live app on one fixed port that a test may stop and start again (the same origin,
    as a browser sees a restarted server). Each start builds a fresh app from ``overrides``."""

    def __init__(self, make_live_app: AppFactory, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self._make = make_live_app
        self._stack: AsyncExitStack | None = None
        self.overrides: dict[str, object] = {
            "env": "dev",
            "public_base_url": self.url,
            "allowed_origins": [self.url],
        }

    def app(self) -> FastAPI:
        return self._make(**self.overrides)

    async def start(self) -> None:
        assert self._stack is None, "already running"
        stack = AsyncExitStack()
        served = await stack.enter_async_context(serve(self.app()))
        assert served == self.url
        self._stack = stack

    async def stop(self) -> None:
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()


@pytest.fixture
async def restartable_server(
    make_live_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[RestartableServer]:
    """Not started: set ``overrides`` (settings), then ``await start()``. The worker runs on an
    app of its own, so it keeps working while the served one is stopped."""
    port = free_port()
    monkeypatch.setattr("tests.live.free_port", lambda: port)
    server = RestartableServer(make_live_app, port)
    worker_app = server.app()
    try:
        async with running_worker(worker_app.state.resources):
            try:
                yield server
            finally:
                await server.stop()
    finally:
        await worker_app.state.resources.close()
