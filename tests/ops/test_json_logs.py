"""Every line a serve, worker or migrate process writes is one JSON object for Cloud Logging.

The processes are the real ``atelier`` commands; their stdout and stderr are read line by line.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from backend.config import Settings
from backend.core.db import Database, commit
from backend.core.redis import create_redis
from backend.tasks.models import Task, TaskStatus
from backend.tasks.queue import TaskQueue
from tests.conftest import PASSWORD, TEST_SECRET, unique_email
from tests.servers import Server, free_port

ATELIER = str(Path(sys.executable).with_name("atelier"))
ROOT = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")}
    for name in ("DATABASE_URL", "REDIS_URL", "STORAGE_URL", "PORT", "PYTHONWARNINGS"):
        env.pop(name, None)
    # The test task kinds live in this checkout; the worker imports them by module name.
    env["PYTHONPATH"] = str(ROOT)
    env.update({"ATELIER_ENV": "dev", **extra})
    return env


def json_lines(out: Path) -> list[dict[str, Any]]:
    """Every line parsed; a line that is not a JSON object with severity and message fails."""
    parsed = []
    for number, line in enumerate(out.read_text().splitlines(), 1):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"{out.name}:{number} is not JSON: {line[:300]}")
        assert isinstance(entry, dict), line
        assert entry.get("severity") in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}, line
        assert isinstance(entry.get("message"), str), line
        assert entry["message"], line
        parsed.append(entry)
    assert parsed, f"{out.name} is empty"
    return parsed


@contextmanager
def running(argv: list[str], cwd: Path, env: dict[str, str], out: Path) -> Iterator[None]:
    """A process writing stdout and stderr (separately captured, both checked) until SIGTERM."""
    err = out.with_suffix(".err")
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=stdout, stderr=stderr)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    # Anything on stderr must be JSON too; then fold it into the one log to check.
    with out.open("a") as merged:
        merged.write(err.read_text())


def _wait_http(base: str, out: Path) -> None:
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"server did not start:\n{out.read_text()[-3000:]}")


def test_serve_embedded_writes_only_json(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    out = tmp_path / "serve.log"
    with running([ATELIER, "serve", "--migrate"], tmp_path, _env(PORT=str(port)), out):
        _wait_http(base, out)
        with httpx.Client(base_url=base, timeout=10) as c:
            assert c.get("/health").status_code == 200
            assert c.get("/no/such/page").status_code == 404
            bad = c.post(
                "/api/auth/login", content=b"{", headers={"Content-Type": "application/json"}
            )
            assert bad.status_code == 422
            assert c.post("/api/auth/login", json={"email": "x@example.com"}).status_code == 422
            email = unique_email()
            assert (
                c.post("/api/auth/register", json={"email": email, "password": PASSWORD})
            ).status_code == 201
            # A WebSocket refused before accept is logged by uvicorn itself, not by our middleware.
            refused = c.get(
                "/ws",
                headers={
                    "Connection": "Upgrade",
                    "Upgrade": "websocket",
                    "Sec-WebSocket-Version": "13",
                    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                    "Origin": "http://evil.example",
                },
            )
            assert refused.status_code in (400, 403)
    lines = json_lines(out)
    loggers = {line.get("logger") for line in lines}
    # uvicorn, saq (the embedded worker), alembic (--migrate) and our request lines all in JSON.
    assert {"uvicorn.error", "saq", "alembic.runtime.migration", "atelier.request"} <= loggers
    missing = next(line for line in lines if line.get("path") == "/no/such/page")
    assert missing["status"] == 404
    assert any(line["message"].startswith("Finished server process") for line in lines)


def test_migrate_logs_json_and_a_failure_is_one_line(tmp_path: Path) -> None:
    out = tmp_path / "migrate.log"
    with out.open("wb") as fh:
        done = subprocess.run(
            [ATELIER, "migrate"], cwd=tmp_path, env=_env(), stdout=fh, stderr=fh, timeout=120
        )
    assert done.returncode == 0
    lines = json_lines(out)
    assert any(line["message"].startswith("Running upgrade") for line in lines)

    broken = tmp_path / "broken.log"
    unreachable = f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/nothing"
    with broken.open("wb") as fh:
        failed = subprocess.run(
            [ATELIER, "migrate"],
            cwd=tmp_path,
            env=_env(DATABASE_URL=unreachable),
            stdout=fh,
            stderr=fh,
            timeout=120,
        )
    assert failed.returncode != 0
    crash = [line for line in json_lines(broken) if "exception" in line]
    # The whole traceback is inside one line, not split over dozens.
    assert len(crash) == 1, crash
    assert crash[0]["severity"] == "CRITICAL"
    assert crash[0]["exception"].startswith("Traceback (most recent call last):")
    assert "Connect" in crash[0]["exception"] or "refused" in crash[0]["exception"]


async def _create(db: Database, queue: TaskQueue, kind: str, **payload: Any) -> Task:
    from backend.auth.service import create_user
    from backend.tasks import service

    async with db.sessionmaker() as session:
        user = await create_user(session, email=unique_email("logs"), password=PASSWORD)
        task = await service.create_task(
            session, queue, queue.saq.redis, user_id=user.id, kind=kind, payload=payload
        )
        await commit(session)
    return task


async def _finished(db: Database, task: Task) -> Task:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        async with db.sessionmaker() as session:
            row = await session.get(Task, task.id)
        assert row is not None
        if row.status.finished:
            return row
        await asyncio.sleep(0.1)
    pytest.fail(f"task {task.kind} did not finish")


async def test_worker_writes_only_json(tmp_path: Path, redis_server: Server) -> None:
    import tests.tasks.kinds  # noqa: F401 - the kinds the worker process imports as well

    database_url = f"sqlite+aiosqlite:///{tmp_path / 'atelier.db'}"
    # A Redis database of its own: other tests flush theirs.
    redis_url = redis_server.url.rsplit("/", 1)[0] + "/7"
    env = _env(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        ATELIER_TASK_MODULES="tests.tasks.kinds",
        ATELIER_SECRET_KEY=TEST_SECRET,
    )
    migrated = subprocess.run(
        [ATELIER, "migrate"], cwd=tmp_path, env=env, capture_output=True, timeout=120
    )
    assert migrated.returncode == 0, migrated.stderr
    settings = Settings(env="test", secret_key=TEST_SECRET, database_url=database_url)
    db = Database(settings.database_url)
    redis = create_redis(redis_url)
    await redis.flushdb()
    queue = TaskQueue(redis)
    out = tmp_path / "worker.log"
    try:
        with running([ATELIER, "worker"], tmp_path, env, out):
            ok = await _finished(db, await _create(db, queue, "test.steps", steps=2))
            bad = await _finished(db, await _create(db, queue, "test.broken"))
        assert ok.status == TaskStatus.succeeded
        assert bad.status == TaskStatus.failed
    finally:
        await redis.flushdb()
        await redis.aclose()
        await db.dispose()
    lines = json_lines(out)
    assert any(line.get("logger") == "saq" for line in lines)
    raised = [line for line in lines if line["message"] == "task_raised"]
    assert raised, "the failing task logged no error"
    assert raised[0]["severity"] == "ERROR"
    assert "ValueError: broken on purpose" in raised[0]["exception"]
