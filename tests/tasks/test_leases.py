"""A lease dies with its task, whatever cancellation does: real Postgres and Redis.

Cancellation can be swallowed (a Redis command in flight in redis-py, a handler catching it), so
a lease must never depend on it: renewals carry the claim's generation and a lifetime bound, the
ticker stops on a flag, and the sweeper recovers whatever stops being renewed.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from backend.auth.service import create_user
from backend.composition import AppResources
from backend.config import Settings
from backend.core.db import Database, commit, utcnow
from backend.tasks import service
from backend.tasks.models import Task, TaskStatus
from backend.tasks.registry import spec_for
from backend.tasks.worker import TaskRunner, running_worker
from tests.outage import Restartable, outage_postgres  # noqa: F401 - fixture
from tests.tasks import kinds
from tests.tasks.conftest import CreateTask, SpawnWorker, load, wait_for, wait_status


async def test_renewal_is_refused_to_another_generation_and_past_its_lifetime(
    resources: AppResources, create_task: CreateTask
) -> None:
    task_id = await create_task("test.steps", steps=2)
    runner = TaskRunner(resources, None)
    claimed = await runner._claim(task_id)
    assert claimed is not None
    task, spec = claimed
    attempt = task.attempts
    assert await runner._renew(task_id, attempt, spec) is True

    async def set_row(**values: Any) -> None:
        async with resources.db.sessionmaker() as session:
            await session.execute(update(Task).where(Task.id == task_id).values(**values))
            await session.commit()

    # A newer claim of the same row (the sweeper recovered it, another worker took it).
    await set_row(attempts=attempt + 1)
    before = (await load(resources, task_id)).deadline_at
    assert await runner._renew(task_id, attempt, spec) is False
    assert (await load(resources, task_id)).deadline_at == before
    # The same claim, but older than the kind's timeout plus a lease: no longer renewable.
    await set_row(attempts=attempt, started_at=utcnow() - timedelta(seconds=spec.timeout + 30))
    assert await runner._renew(task_id, attempt, spec) is False
    # Nor are rows that left running.
    await set_row(started_at=utcnow(), status=TaskStatus.queued)
    assert await runner._renew(task_id, attempt, spec) is False
    await set_row(status=TaskStatus.running)
    assert await runner._renew(task_id, attempt, spec) is True


async def test_ticker_ends_with_its_task_when_its_cancel_is_swallowed(
    resources: AppResources, create_task: CreateTask, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = asyncio.get_running_loop()
    renewals: list[float] = []
    swallowed: list[float] = []
    original = TaskRunner._renew

    async def renew_swallowing_a_cancel(
        self: TaskRunner, task_id: uuid.UUID, attempt: int, spec: Any
    ) -> bool:
        # Like a Redis or database command in flight that eats the cancellation.
        renewals.append(loop.time())
        for event in kinds.RENEWAL_IN_FLIGHT:
            event.set()
        try:
            await asyncio.sleep(0.3)
        except asyncio.CancelledError:
            swallowed.append(loop.time())
            await asyncio.sleep(0.3)
        return await original(self, task_id, attempt, spec)

    monkeypatch.setattr(TaskRunner, "_renew", renew_swallowing_a_cancel)
    kinds.RENEWAL_IN_FLIGHT.clear()
    task_id = await create_task("test.ends_mid_renewal")
    async with running_worker(resources):
        await wait_status(resources, task_id, TaskStatus.succeeded)
        ended = loop.time()
        # Several renewal periods (0.5 s for this kind) with the worker still running.
        await asyncio.sleep(2.5)
        tickers = [
            t
            for t in asyncio.all_tasks()
            if getattr(t.get_coro(), "__qualname__", "") == "TaskRunner._ticker"
        ]
    assert swallowed, "the injected swallow never happened; the test proves nothing"
    assert [t for t in renewals if t > ended] == [], "the lease was renewed after its task ended"
    assert tickers == []
    assert (await load(resources, task_id)).status == TaskStatus.succeeded


async def test_a_handler_that_swallows_cancellation_loses_its_lease(
    resources: AppResources, create_task: CreateTask
) -> None:
    # timeout 1 s, lease 3 s, one attempt: renewals stop 4 s after the claim at the latest.
    task_id = await create_task("test.stubborn", seconds=14)
    started = time.monotonic()
    async with running_worker(resources):
        task = await wait_status(
            resources, task_id, TaskStatus.failed, TaskStatus.succeeded, timeout=12
        )
        recovered_after = time.monotonic() - started
        assert task.status == TaskStatus.failed
        assert task.error_code == "task.lost"
        # The handler did ignore its cancellation, and is in fact still running.
        assert kinds.STUBBORN_SECONDS.get(str(task_id), 0) >= 1
        assert not kinds.STUBBORN_DONE.get(str(task_id))
        # When it finally returns, the stale attempt must not overwrite the row.
        deadline = time.monotonic() + 15
        while not kinds.STUBBORN_DONE.get(str(task_id)):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
    final = await load(resources, task_id)
    assert final.status == TaskStatus.failed
    assert final.error_code == "task.lost"
    assert final.deadline_at is None
    print(f"\nrow recovered {recovered_after:.1f} s after a swallowed timeout")  # noqa: T201


@pytest.fixture
async def outage_db(outage_postgres: Restartable) -> AsyncIterator[Database]:  # noqa: F811
    outage_postgres.ensure_up()
    db = Database(outage_postgres.url, pool_size=3)
    yield db
    await db.dispose()


async def test_postgres_restart_mid_load_leaves_no_task_running_past_its_lease(
    engine_settings: Settings,
    outage_postgres: Restartable,  # noqa: F811
    outage_db: Database,
    redis: Any,
    spawn_worker: SpawnWorker,
) -> None:
    settings = engine_settings.model_copy(
        update={"database_url": outage_postgres.url, "worker_concurrency": 4}
    )
    resources = AppResources(settings, db=outage_db, redis=redis)
    async with outage_db.sessionmaker() as session:
        user = await create_user(
            session, email=f"pg-{uuid.uuid4().hex[:8]}@example.com", password="a long password"
        )
        await commit(session)
    worker = spawn_worker(settings)
    await worker.wait_ready()
    slack = settings.sweep_interval_seconds + 3.0
    for round_ in range(3):
        ids = []
        async with outage_db.sessionmaker() as session:
            for _ in range(8):
                task = await service.create_task(
                    session,
                    resources.queue,
                    redis,
                    user_id=user.id,
                    kind="test.steps",
                    payload={"steps": 20, "delay": 0.1},
                )
                ids.append(task.id)
            await commit(session)
        await wait_for(resources, ids[0], lambda t: t.status == TaskStatus.running, what="running")
        outage_postgres.stop()
        await asyncio.sleep(3)
        outage_postgres.start()
        # Every row ends; none stays running once its lease (plus a sweep) has passed.
        deadline = time.monotonic() + 90
        while True:
            async with outage_db.sessionmaker() as session:
                rows = list(await session.scalars(select(Task).where(Task.id.in_(ids))))
            now = utcnow()
            stale = [
                t
                for t in rows
                if t.status == TaskStatus.running
                and t.deadline_at is not None
                and now - t.deadline_at > timedelta(seconds=slack)
            ]
            assert stale == [], f"round {round_}: running past the lease: {stale}"
            if all(t.status.finished for t in rows):
                break
            assert time.monotonic() < deadline, (
                f"round {round_}: unfinished {[(t.status, t.message) for t in rows]}"
                f"\n{worker.log()[-3000:]}"
            )
            await asyncio.sleep(0.5)
        assert all(t.status == TaskStatus.succeeded for t in rows), [
            (t.status, t.error) for t in rows
        ]
    assert worker.proc.poll() is None


def test_lease_is_a_few_heartbeats() -> None:
    spec = spec_for("test.steps")
    assert spec.lease == 3 * spec.heartbeat


async def test_worker_shutdown_ends_a_sweeper_whose_cancel_is_swallowed(
    resources: AppResources, monkeypatch: pytest.MonkeyPatch
) -> None:
    from backend.tasks import sweeper

    in_flight = asyncio.Event()
    swallowed: list[bool] = []
    original = sweeper.sweep_once

    async def sweep_swallowing_a_cancel(res: AppResources) -> Any:
        in_flight.set()
        try:
            await asyncio.sleep(15)  # still in flight when shutdown comes
        except asyncio.CancelledError:
            swallowed.append(True)  # like a Redis command in flight eating it
            await asyncio.sleep(0.5)
        return await original(res)

    monkeypatch.setattr(sweeper, "sweep_once", sweep_swallowing_a_cancel)
    running = running_worker(resources)
    await running.__aenter__()
    await asyncio.wait_for(in_flight.wait(), 10)
    # Bounded only so that a regression fails instead of hanging the run.
    await asyncio.wait_for(running.__aexit__(None, None, None), 20)
    assert swallowed
    sweepers = [
        t for t in asyncio.all_tasks() if getattr(t.get_coro(), "__qualname__", "") == "run_forever"
    ]
    for _ in range(40):
        if all(t.done() for t in sweepers):
            break
        await asyncio.sleep(0.1)
    assert all(t.done() for t in sweepers)
