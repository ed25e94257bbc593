"""The embedded defaults of `make run`: SQLite, in-process Redis, a local storage folder.

These run without any server, the way a newcomer's laptop does.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from backend.config import Settings
from backend.core.migrations import upgrade
from backend.main import create_app
from tests.conftest import PASSWORD, TEST_SECRET, client_for, make_embedded_app, unique_email
from tests.servers import free_port

pytestmark = pytest.mark.embedded
ATELIER = str(Path(sys.executable).with_name("atelier"))


@pytest.fixture
async def embedded_app(tmp_path: Path) -> AsyncIterator[FastAPI]:
    app = await make_embedded_app(tmp_path)
    yield app
    await app.state.resources.close()


async def test_register_login_me_on_sqlite(embedded_app: FastAPI) -> None:
    email = unique_email()
    async with client_for(embedded_app) as c:
        registered = await c.post("/api/auth/register", json={"email": email, "password": PASSWORD})
        assert registered.status_code == 201, registered.text
        assert (
            await c.post("/api/auth/register", json={"email": email, "password": PASSWORD})
        ).status_code == 409
        me = (await c.get("/api/auth/me")).json()
        assert me["email"] == email
        assert me["created_at"].endswith("Z")
        refreshed = await c.post(
            "/api/auth/refresh", headers={"X-CSRF-Token": c.cookies["csrf_token"]}
        )
        assert refreshed.status_code == 200
    async with client_for(embedded_app) as c:
        login = await c.post("/api/auth/login", json={"email": email, "password": PASSWORD})
        assert login.status_code == 200
        assert (await c.get("/api/auth/me")).json()["id"] == me["id"]
        health = (await c.get("/health")).json()
        assert health["checks"] == {"database": "ok", "redis": "ok", "storage": "ok"}


async def test_login_rate_limit_works_in_process(embedded_app: FastAPI) -> None:
    email = unique_email()
    async with client_for(embedded_app) as c:
        await c.post("/api/auth/register", json={"email": email, "password": PASSWORD})
        for _ in range(5):
            assert (
                await c.post("/api/auth/login", json={"email": email, "password": "wrong-password"})
            ).status_code == 401
        blocked = await c.post("/api/auth/login", json={"email": email, "password": PASSWORD})
        assert blocked.status_code == 429
        assert int(blocked.headers["Retry-After"]) > 0


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")}
    for name in ("DATABASE_URL", "REDIS_URL", "STORAGE_URL", "PORT"):
        env.pop(name, None)
    env.update({"ATELIER_ENV": "dev", **extra})
    return env


def test_cli_migrate_and_create_admin(tmp_path: Path) -> None:
    env = _env()
    subprocess.run([ATELIER, "migrate"], cwd=tmp_path, env=env, check=True, timeout=60)
    assert (tmp_path / "var" / "atelier.db").exists()
    made = subprocess.run(
        [ATELIER, "create-admin", "Root@Example.com"],
        cwd=tmp_path,
        env=env,
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "created admin root@example.com" in made.stdout
    again = subprocess.run(
        [ATELIER, "create-admin", "root@example.com"],
        cwd=tmp_path,
        env=env,
        input=PASSWORD + "!\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "promoted admin root@example.com" in again.stdout
    weak = subprocess.run(
        [ATELIER, "create-admin", "other@example.com"],
        cwd=tmp_path,
        env=env,
        input="short\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert weak.returncode != 0
    assert "at least 10 characters" in weak.stderr


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`atelier serve --migrate` as `make run` starts it, on a free port."""
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [ATELIER, "serve", "--migrate"],
            cwd=tmp_path,
            env=_env(PORT=str(port), GOOGLE_CLOUD_PROJECT="demo-project"),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"atelier serve did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield base, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_serve_embedded_end_to_end(served: tuple[str, Path]) -> None:
    base, log = served
    with httpx.Client(base_url=base, timeout=10) as c:
        assert c.get("/docs").status_code == 200
        assert "/api/auth/login" in c.get("/openapi.json").json()["paths"]
        health = c.get("/health").json()
        assert health["status"] == "ok"
        assert health["checks"] == {"database": "ok", "redis": "ok", "storage": "ok"}
        home = c.get("/")
        assert home.status_code == 200
        assert "text/html" in home.headers["content-type"]

        email = unique_email()
        registered = c.post(
            "/api/auth/register",
            json={"email": email, "password": PASSWORD},
            headers={"X-Cloud-Trace-Context": "0123456789abcdef0123456789abcdef/1;o=1"},
        )
        assert registered.status_code == 201
        # Dev mode serves plain http on a laptop, so the cookies are not Secure there.
        assert "secure" not in registered.headers["set-cookie"].lower()
        assert c.get("/api/auth/me").json()["email"] == email

    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    request_line = next(line for line in lines if line.get("path") == "/api/auth/register")
    assert request_line["status"] == 201
    assert request_line["route"] == "/api/auth/register"
    assert request_line["severity"] == "INFO"
    assert request_line["duration_ms"] > 0
    assert len(request_line["request_id"]) == 32
    assert (
        request_line["logging.googleapis.com/trace"]
        == "projects/demo-project/traces/0123456789abcdef0123456789abcdef"
    )


async def test_embedded_worker_runs_tasks_in_process(tmp_path: Path) -> None:
    """`make run`'s queue: saq on fakeredis (Lua via lupa), the worker inside the API process."""
    import tests.tasks.kinds  # noqa: F401 - registers the test task kinds
    from backend.auth.service import create_user
    from backend.core.db import commit
    from backend.tasks import service
    from backend.tasks.models import Task, TaskStatus
    from tests.live import serve

    settings = Settings(
        env="test",
        secret_key=TEST_SECRET,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'atelier.db'}",
        storage_url=f"file://{tmp_path / 'storage'}",
        task_modules=["tests.tasks.kinds"],
    )
    assert settings.run_embedded_worker
    await asyncio.to_thread(upgrade, settings.database_url)
    app = create_app(settings)
    resources = app.state.resources
    async with serve(app):
        async with resources.db.sessionmaker() as session:
            user = await create_user(session, email=unique_email(), password=PASSWORD)
            task = await service.create_task(
                session,
                resources.queue,
                resources.redis,
                user_id=user.id,
                kind="test.steps",
                payload={"steps": 4},
            )
            await commit(session)
        deadline = time.monotonic() + 20
        while True:
            async with resources.db.sessionmaker() as session:
                row = await session.get(Task, task.id)
                assert row is not None
            if row.status == TaskStatus.succeeded or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
    assert row.status == TaskStatus.succeeded, (row.status, row.error)
    assert row.progress == 100
    assert row.result == {"steps": 4, "attempt": 1}
