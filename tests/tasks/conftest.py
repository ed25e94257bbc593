"""Fixtures for the task engine: worker resources on committed data, in-process and real
worker processes, and helpers that wait for a row to reach a state."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

import tests.tasks.kinds  # noqa: F401 - registers the test task kinds in this process
from backend.composition import AppResources
from backend.config import Settings
from backend.core.db import Database, commit
from backend.tasks import service
from backend.tasks.models import Task, TaskStatus
from tests.conftest import TEST_SECRET
from tests.servers import Server

ROOT = Path(__file__).resolve().parents[2]
ATELIER = str(Path(sys.executable).with_name("atelier"))
ENGINE_SETTINGS: dict[str, Any] = {
    "task_modules": ["tests.tasks.kinds"],
    "sweep_interval_seconds": 1.0,
    "task_queue_grace_seconds": 2.0,
    "worker_concurrency": 2,
}


@pytest.fixture
def engine_settings(settings: Settings) -> Settings:
    return settings.model_copy(update=ENGINE_SETTINGS)


@pytest.fixture
def resources(
    engine_settings: Settings, committed_database: Database, redis: Redis
) -> AppResources:
    return AppResources(engine_settings, db=committed_database, redis=redis)


@pytest.fixture
async def user_id(committed_database: Database) -> uuid.UUID:
    from backend.auth.service import create_user

    async with committed_database.sessionmaker() as session:
        user = await create_user(
            session, email=f"worker-{uuid.uuid4().hex[:8]}@example.com", password="a long password"
        )
        await commit(session)
        return user.id


CreateTask = Callable[..., Awaitable[uuid.UUID]]


@pytest.fixture
def create_task(resources: AppResources, user_id: uuid.UUID) -> CreateTask:
    async def factory(kind: str, owner: uuid.UUID | None = None, **payload: Any) -> uuid.UUID:
        async with resources.db.sessionmaker() as session:
            task = await service.create_task(
                session,
                resources.queue,
                resources.redis,
                user_id=owner or user_id,
                kind=kind,
                payload=payload,
            )
            await commit(session)
            return task.id

    return factory


async def load(resources: AppResources, task_id: uuid.UUID) -> Task:
    async with resources.db.sessionmaker() as session:
        task = await session.get(Task, task_id)
        assert task is not None
        return task


async def wait_for(
    resources: AppResources,
    task_id: uuid.UUID,
    predicate: Callable[[Task], bool],
    *,
    timeout: float = 20.0,
    what: str = "the expected state",
) -> Task:
    deadline = time.monotonic() + timeout
    while True:
        task = await load(resources, task_id)
        if predicate(task):
            return task
        if time.monotonic() > deadline:
            last = f"{task.status} {task.message} {task.error}"
            pytest.fail(f"task {task_id} did not reach {what}; last: {last}")
        await asyncio.sleep(0.05)


async def wait_status(
    resources: AppResources, task_id: uuid.UUID, *statuses: TaskStatus, timeout: float = 20.0
) -> Task:
    return await wait_for(
        resources,
        task_id,
        lambda t: t.status in statuses,
        timeout=timeout,
        what=f"status {statuses}",
    )


class WorkerProcess:
    """``atelier worker`` as a real OS process, the way production runs it."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")}
        for name in ("DATABASE_URL", "REDIS_URL", "STORAGE_URL"):
            env.pop(name, None)
        env.update(
            {
                "ATELIER_ENV": "test",
                "ATELIER_SECRET_KEY": TEST_SECRET,
                "DATABASE_URL": settings.database_url,
                "REDIS_URL": settings.redis_url or "",
                "STORAGE_URL": settings.storage_url,
                "ATELIER_TASK_MODULES": ",".join(settings.task_modules),
                "ATELIER_SWEEP_INTERVAL_SECONDS": str(settings.sweep_interval_seconds),
                "ATELIER_TASK_QUEUE_GRACE_SECONDS": str(settings.task_queue_grace_seconds),
                "ATELIER_WORKER_CONCURRENCY": str(settings.worker_concurrency),
                "PYTHONPATH": str(ROOT),
            }
        )
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [ATELIER, "worker"], cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while "worker_starting" not in self.log():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"worker did not start:\n{self.log()[-3000:]}")
            await asyncio.sleep(0.05)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


SpawnWorker = Callable[..., WorkerProcess]


@pytest.fixture
def spawn_worker(engine_settings: Settings, tmp_path: Path) -> Iterator[SpawnWorker]:
    started: list[WorkerProcess] = []

    def factory(settings: Settings | None = None) -> WorkerProcess:
        worker = WorkerProcess(settings or engine_settings, tmp_path / f"worker-{len(started)}.log")
        started.append(worker)
        return worker

    yield factory
    for worker in started:
        worker.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[Server]:
    """A Redis of this test's own, for tests that restart it."""
    from tests.servers import start_redis

    holder = [start_redis(tmp_path / "own-redis")]
    yield holder[0]
    holder[0].stop()
