"""Dependency outages: a Postgres or Redis that is down answers 503 ``service.unavailable``
with ``Retry-After``, quickly and never 500, and ``/health`` names what is down.

Servers of this module's own are stopped mid-test (the session's shared ones stay up).
Timings here only guard against hanging (< 5 s); latency is not measured by tests.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from backend.composition import AppResources
from backend.config import Settings
from backend.core import db as db_module
from backend.core.db import Database
from backend.main import create_app
from tests.conftest import PASSWORD, client_for, unique_email
from tests.outage import Restartable, outage_postgres, outage_redis  # noqa: F401 - fixtures

HANG_BOUND_SECONDS = 5.0


def _problem(answer: httpx.Response) -> dict[str, Any]:
    assert answer.headers["content-type"].startswith("application/problem+json"), answer.text
    body: dict[str, Any] = answer.json()
    return body


def _assert_unavailable(answer: httpx.Response, dependency: str) -> None:
    assert answer.status_code == 503, answer.text
    body = _problem(answer)
    assert body["code"] == "service.unavailable"
    assert body["dependency"] == dependency
    assert int(answer.headers["Retry-After"]) >= 1


async def _timed(c: httpx.AsyncClient, method: str, url: str, **kw: Any) -> httpx.Response:
    started = time.monotonic()
    answer = await c.request(method, url, **kw)
    elapsed = time.monotonic() - started
    assert elapsed < HANG_BOUND_SECONDS, f"{method} {url} hung for {elapsed:.1f} s"
    return answer


async def _sign_up(c: httpx.AsyncClient) -> dict[str, str]:
    email = unique_email("outage")
    answer = await c.post("/api/auth/register", json={"email": email, "password": PASSWORD})
    assert answer.status_code == 201, answer.text
    return {"email": email, "X-CSRF-Token": c.cookies.get("csrf_token") or ""}


def _operations(app: Any) -> list[tuple[str, str]]:
    ops = []
    for path, item in app.openapi()["paths"].items():
        for method in item:
            concrete = re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path)
            ops.append((method.upper(), concrete))
    return ops


@pytest.fixture
async def pg_app(
    outage_postgres: Restartable,  # noqa: F811
    settings: Settings,
    redis: Redis,
) -> AsyncIterator[tuple[Any, Restartable]]:
    outage_postgres.ensure_up()
    app_settings = settings.model_copy(update={"database_url": outage_postgres.url})
    # The app's own Database, built like production's (with its connect and pool timeouts).
    app = create_app(app_settings, resources=AppResources(app_settings, redis=redis))
    yield app, outage_postgres
    await app.state.resources.close()
    outage_postgres.ensure_up()


async def test_postgres_down_answers_503_on_every_endpoint(
    pg_app: tuple[Any, Restartable],
) -> None:
    app, server = pg_app
    async with client_for(app, timeout=30) as c:
        signed = await _sign_up(c)
        csrf = {"X-CSRF-Token": signed["X-CSRF-Token"]}
        assert (await c.get("/api/auth/me")).status_code == 200
        server.stop()
        try:
            # The endpoints a signed-in client uses most: exactly 503, fast.
            for method, url, body in (
                ("GET", "/api/auth/me", None),
                ("GET", "/api/images", None),
                ("GET", "/api/tasks", None),
                ("GET", f"/api/tasks/{uuid.uuid4()}", None),
                ("POST", "/api/auth/login", {"email": signed["email"], "password": PASSWORD}),
                ("POST", "/api/auth/register", {"email": unique_email(), "password": PASSWORD}),
            ):
                answer = await _timed(c, method, url, json=body, headers=csrf)
                _assert_unavailable(answer, "database")
            # Every other operation, whatever its inputs: never a 500, never a hang, and a
            # 503 is always the documented one.
            seen_503 = 0
            for method, url in _operations(app):
                answer = await _timed(c, method, url, json={}, headers=csrf)
                assert answer.status_code != 500, (method, url, answer.text)
                if answer.status_code == 503 and url not in ("/health", "/readyz"):
                    _assert_unavailable(answer, "database")
                    seen_503 += 1
            assert seen_503 >= 10
            health = await _timed(c, "GET", "/health")
            assert health.status_code == 503
            assert health.json()["checks"]["database"] == "down"
            assert health.json()["checks"]["redis"] == "ok"
        finally:
            server.start()
        # Back up: the pool reconnects by itself.
        assert (await c.get("/api/auth/me")).status_code == 200
        assert (await c.get("/health")).status_code == 200


@pytest.fixture
async def redis_app(
    outage_redis: Restartable,  # noqa: F811
    settings: Settings,
    database: Database,
) -> AsyncIterator[tuple[Any, Restartable]]:
    outage_redis.ensure_up()
    app_settings = settings.model_copy(update={"redis_url": outage_redis.url})
    # The app's own Redis client, built like production's (with its bounded timeouts).
    app = create_app(app_settings, resources=AppResources(app_settings, db=database))
    yield app, outage_redis
    await app.state.resources.close()
    outage_redis.ensure_up()


async def test_redis_down_answers_503_for_what_needs_it(
    redis_app: tuple[Any, Restartable],
) -> None:
    app, server = redis_app
    presign = {"filename": "a.jpg", "content_type": "image/jpeg", "size_bytes": 1000}
    async with client_for(app, timeout=30) as c:
        signed = await _sign_up(c)
        csrf = {"X-CSRF-Token": signed["X-CSRF-Token"]}
        login = {"email": signed["email"], "password": PASSWORD}
        assert (await c.post("/api/auth/login", json=login)).status_code == 200
        csrf = {"X-CSRF-Token": c.cookies.get("csrf_token") or ""}
        server.stop()
        try:
            _assert_unavailable(await _timed(c, "POST", "/api/auth/login", json=login), "redis")
            answer = await _timed(
                c, "POST", "/api/upload/presigned-url", json=presign, headers=csrf
            )
            _assert_unavailable(answer, "redis")
            # What does not need Redis keeps working.
            assert (await _timed(c, "GET", "/api/images")).status_code == 200
            assert (await _timed(c, "GET", "/api/auth/me")).status_code == 200
            health = await _timed(c, "GET", "/health")
            assert health.status_code == 503
            assert health.json()["checks"] == {"database": "ok", "redis": "down", "storage": "ok"}
        finally:
            server.start()
        assert (await c.post("/api/auth/login", json=login)).status_code == 200
        csrf = {"X-CSRF-Token": c.cookies.get("csrf_token") or ""}
        answer = await c.post("/api/upload/presigned-url", json=presign, headers=csrf)
        assert answer.status_code == 201, answer.text


async def test_the_list_recovers_at_once_after_a_postgres_restart(
    pg_app: tuple[Any, Restartable], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gallery's list reads through the driver itself (``Database.fetch``). A connection
    that Postgres dropped must leave the pool on its first failure, as SQLAlchemy's own
    execution does, not be handed out again to every request that comes within the idle-ping
    second, which is all of them on a busy instance."""
    app, server = pg_app
    # A busy instance: its connections are never idle long enough to be pinged at checkout.
    monkeypatch.setattr(db_module, "IDLE_PING_SECONDS", 3600.0)
    async with client_for(app, timeout=30) as c:
        await _sign_up(c)
        # Long enough for the session cache to subscribe and be trusted: the list's request
        # then touches the database through the driver read alone.
        for _ in range(4):
            assert (await c.get("/api/images")).status_code == 200
            await asyncio.sleep(0.3)
        server.stop()
        server.start()
        answers = [(await c.get("/api/images")).status_code for _ in range(5)]
        # At most the request that met the dead connection answers 503; the rest are served.
        assert answers[-1] == 200, answers
        assert answers.count(503) <= 1, answers
        assert set(answers) <= {200, 503}, answers
