"""The task engine on real Postgres and Redis: lifecycle, retries, cancellation, crash recovery."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from sqlalchemy import func, select

from backend.composition import AppResources
from backend.config import Settings
from backend.core.db import Database, rollback
from backend.core.redis import create_redis
from backend.tasks import metrics, service
from backend.tasks.events import CHANNEL
from backend.tasks.models import Task, TaskStatus
from backend.tasks.sweeper import sweep_once
from backend.tasks.worker import RUNNING_EVENT_DELAY_SECONDS, running_worker
from tests.servers import restart_redis
from tests.tasks.conftest import (
    CreateTask,
    SpawnWorker,
    load,
    wait_for,
    wait_status,
)


async def test_lifecycle_events_and_monotonic_progress(
    resources: AppResources, create_task: CreateTask, redis: Redis
) -> None:
    pubsub = redis.pubsub()
    await pubsub.subscribe(CHANNEL)
    try:
        task_id = await create_task("test.steps", steps=6)
        async with running_worker(resources):
            task = await wait_status(resources, task_id, TaskStatus.succeeded)
        seen: list[dict[str, object]] = []
        quiet_until = time.monotonic() + 1.0
        while time.monotonic() < quiet_until:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if message is None:
                continue
            event = json.loads(message["data"])["event"]
            if event["task"]["id"] == str(task_id):
                seen.append(event["task"])
    finally:
        await pubsub.aclose()

    assert task.progress == 100
    assert task.result == {"steps": 6, "attempt": 1}
    assert task.attempts == 1
    assert task.started_at is not None
    assert task.finished_at is not None
    assert task.finished_at >= task.started_at
    statuses = [str(e["status"]) for e in seen]
    assert statuses[0] == "queued"
    assert statuses[-1] == "succeeded"
    assert "running" in statuses
    # queued → running → succeeded, never back.
    order = {"queued": 0, "running": 1, "succeeded": 2}
    assert [order[s] for s in statuses] == sorted(order[s] for s in statuses)
    progress = [int(e["progress"]) for e in seen]  # type: ignore[call-overload]
    assert progress == sorted(progress)
    assert len(set(progress)) >= 6


async def _statuses_seen(
    redis: Redis, run: Callable[[], Awaitable[list[uuid.UUID]]]
) -> dict[str, list[str]]:
    """Each task's event statuses, in order, while ``run`` creates and finishes them."""
    pubsub = redis.pubsub()
    await pubsub.subscribe(CHANNEL)
    seen: dict[str, list[str]] = {}
    try:
        ids = await run()
        quiet_until = time.monotonic() + 1.0
        while time.monotonic() < quiet_until:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if message is not None:
                task = json.loads(message["data"])["event"]["task"]
                seen.setdefault(task["id"], []).append(task["status"])
    finally:
        await pubsub.aclose()
    return {str(i): seen.get(str(i), []) for i in ids}


async def test_running_is_announced_unless_the_run_ends_first(
    resources: AppResources, create_task: CreateTask, redis: Redis
) -> None:
    async def run() -> list[uuid.UUID]:
        quick = await create_task("test.noop")
        # Its steps take longer than the hold-back: "running" goes out on its own, first.
        slow = await create_task("test.steps", steps=2, delay=RUNNING_EVENT_DELAY_SECONDS)
        async with running_worker(resources):
            await wait_status(resources, quick, TaskStatus.succeeded)
            await wait_status(resources, slow, TaskStatus.succeeded)
        return [quick, slow]

    quick, slow = (await _statuses_seen(redis, run)).values()
    # A run that ends within the hold-back is announced by its final event alone...
    assert quick == ["queued", "succeeded"]
    assert slow[:2] == ["queued", "running"]
    assert slow[-1] == "succeeded"
    # ...and still counted as having run (the counters behind /metrics).
    entered = await redis.hgetall(metrics.ENTERED_KEY)
    assert int(entered[b"test.noop running"]) >= 1
    assert int(entered[b"test.noop succeeded"]) == int(entered[b"test.noop running"])


async def test_retry_then_success(resources: AppResources, create_task: CreateTask) -> None:
    task_id = await create_task("test.flaky", succeed_on=2)
    async with running_worker(resources):
        task = await wait_status(resources, task_id, TaskStatus.succeeded, TaskStatus.failed)
    assert task.status == TaskStatus.succeeded
    assert task.attempts == 2
    assert task.result == {"attempt": 2}
    assert task.error is None


async def test_retry_budget_exhausted_fails_and_worker_lives_on(
    resources: AppResources, create_task: CreateTask
) -> None:
    broken = await create_task("test.broken")
    async with running_worker(resources):
        task = await wait_status(resources, broken, TaskStatus.failed)
        after = await create_task("test.steps", steps=2)
        assert (await wait_status(resources, after, TaskStatus.succeeded)).progress == 100
    assert task.attempts == 2
    assert task.error == "ValueError: broken on purpose"
    assert task.error_code == "task.error"
    assert task.finished_at is not None


async def test_non_retryable_error_and_timeout(
    resources: AppResources, create_task: CreateTask
) -> None:
    invalid = await create_task("test.invalid")
    slow = await create_task("test.slow")
    async with running_worker(resources):
        invalid_task = await wait_status(resources, invalid, TaskStatus.failed)
        slow_task = await wait_status(resources, slow, TaskStatus.failed)
    assert invalid_task.attempts == 1
    assert invalid_task.error_code == "test.bad_input"
    assert invalid_task.error == "the input cannot be processed"
    assert slow_task.error_code == "task.timeout"
    assert "timed out" in (slow_task.error or "")


async def test_cancel_queued_never_starts(
    resources: AppResources, create_task: CreateTask, user_id: uuid.UUID
) -> None:
    task_id = await create_task("test.steps", steps=2)
    async with resources.db.sessionmaker() as session:
        canceled = await service.cancel_task(
            session, resources.redis, user_id=user_id, task_id=task_id
        )
        assert canceled.status == TaskStatus.canceled
        await session.commit()
    async with running_worker(resources):
        # The job is still in the queue; the worker must take it and leave the row alone.
        await asyncio.sleep(1.0)
        assert await resources.queue.depth() == 0
    task = await load(resources, task_id)
    assert task.status == TaskStatus.canceled
    assert task.started_at is None
    assert task.attempts == 0


async def test_cancel_running_stops_at_next_checkpoint(
    resources: AppResources, create_task: CreateTask, user_id: uuid.UUID
) -> None:
    task_id = await create_task("test.steps", steps=200, delay=0.05)
    async with running_worker(resources):
        await wait_for(resources, task_id, lambda t: t.progress >= 2, what="some progress")
        async with resources.db.sessionmaker() as session:
            await service.cancel_task(session, resources.redis, user_id=user_id, task_id=task_id)
            await session.commit()
        task = await wait_status(resources, task_id, TaskStatus.canceled, TaskStatus.succeeded)
    assert task.status == TaskStatus.canceled
    assert task.progress < 100
    assert task.finished_at is not None


async def test_enqueue_waits_for_commit_and_rollback_drops_the_job(
    resources: AppResources, user_id: uuid.UUID
) -> None:
    async with resources.db.sessionmaker() as session:
        task = await service.create_task(
            session, resources.queue, resources.redis, user_id=user_id, kind="test.noop"
        )
        # Flushed but not committed: no worker may see a job for a row that may vanish.
        assert await resources.queue.saq.job(str(task.id)) is None
        await rollback(session)
    assert await resources.queue.saq.job(str(task.id)) is None
    assert await resources.queue.depth() == 0
    async with resources.db.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Task)) == 0


async def test_double_enqueue_runs_once(resources: AppResources, create_task: CreateTask) -> None:
    task_id = await create_task("test.steps", steps=2)
    # The sweeper, a retried request or a slow commit may enqueue again: saq dedupes by key.
    assert await resources.queue.enqueue(task_id, "test.steps") is False
    assert await resources.queue.depth() == 1
    async with running_worker(resources):
        task = await wait_status(resources, task_id, TaskStatus.succeeded)
        # saq finishes its job just after the row commits.
        for _ in range(100):
            if await resources.queue.job_status(task_id) == "complete":
                break
            await asyncio.sleep(0.02)
        # Even a job delivered again after success is a no-op on the row.
        assert await resources.queue.enqueue(task_id, "test.steps") is True
        await asyncio.sleep(0.5)
    assert (await load(resources, task_id)).attempts == task.attempts == 1


async def test_sweeper_requeues_rows_whose_job_vanished(
    resources: AppResources, create_task: CreateTask, redis: Redis
) -> None:
    task_id = await create_task("test.noop")
    await redis.flushdb()  # the job is gone, the row remains
    async with resources.db.sessionmaker() as session:
        row = await session.get(Task, task_id)
        assert row is not None
        row.deadline_at = row.created_at  # past due without waiting for the grace period
        await session.commit()
    report = await sweep_once(resources)
    assert report.requeued == [str(task_id)]
    assert await resources.queue.depth() == 1
    # A second sweep finds the job pending and leaves it alone.
    async with resources.db.sessionmaker() as session:
        row = await session.get(Task, task_id)
        assert row is not None
        row.deadline_at = row.created_at
        await session.commit()
    assert (await sweep_once(resources)).requeued == []
    async with running_worker(resources):
        await wait_status(resources, task_id, TaskStatus.succeeded)


async def test_sweeper_fails_a_lost_running_task_without_attempts_left(
    resources: AppResources, create_task: CreateTask, redis: Redis
) -> None:
    task_id = await create_task("test.noop")
    await redis.flushdb()
    async with resources.db.sessionmaker() as session:
        row = await session.get(Task, task_id)
        assert row is not None
        row.status, row.attempts = TaskStatus.running, row.max_attempts
        row.deadline_at = row.created_at
        await session.commit()
    report = await sweep_once(resources)
    assert report.failed == [str(task_id)]
    task = await load(resources, task_id)
    assert task.status == TaskStatus.failed
    assert task.error_code == "task.lost"


async def test_kill_9_mid_task_is_recovered_by_another_worker(
    resources: AppResources, create_task: CreateTask, spawn_worker: SpawnWorker
) -> None:
    first = spawn_worker()
    await first.wait_ready()
    task_id = await create_task("test.steps", steps=40, delay=0.1)
    await wait_for(
        resources,
        task_id,
        lambda t: t.status == TaskStatus.running and t.progress >= 5,
        what="running",
    )
    first.kill()
    killed_at = time.monotonic()

    second = spawn_worker()
    await second.wait_ready()
    resumed = await wait_for(
        resources,
        task_id,
        lambda t: t.attempts == 2 and t.status == TaskStatus.running,
        timeout=30,
        what="a second attempt",
    )
    recovery = time.monotonic() - killed_at
    task = await wait_status(resources, task_id, TaskStatus.succeeded, timeout=30)
    assert resumed.progress >= 5  # the bar never went back
    assert task.attempts == 2
    assert task.result == {"steps": 40, "attempt": 2}
    print(f"\nrecovery after kill -9: {recovery:.1f} s")  # noqa: T201 - figure for the README
    assert second.proc.poll() is None


async def test_sigterm_hands_back_the_running_task(
    resources: AppResources, create_task: CreateTask, spawn_worker: SpawnWorker
) -> None:
    first = spawn_worker()
    await first.wait_ready()
    task_id = await create_task("test.steps", steps=300, delay=0.1)
    await wait_for(resources, task_id, lambda t: t.status == TaskStatus.running, what="running")
    first.terminate()
    stopped = time.monotonic()
    while first.proc.poll() is None:
        assert time.monotonic() - stopped < 10, "the worker outlived Cloud Run's 10 s grace"
        await asyncio.sleep(0.05)
    assert first.proc.returncode == 0, first.log()[-2000:]
    released = await load(resources, task_id)
    assert released.status == TaskStatus.queued, released.message

    second = spawn_worker()
    await second.wait_ready()
    # Shorten the rest: the same row finishes on the new worker.
    task = await wait_for(
        resources, task_id, lambda t: t.attempts == 2, timeout=30, what="a second attempt"
    )
    assert task.status in (TaskStatus.running, TaskStatus.succeeded)


async def test_redis_restart_loses_nothing(
    engine_settings: Settings,
    committed_database: Database,
    user_id: uuid.UUID,
    own_redis: object,
    spawn_worker: SpawnWorker,
) -> None:
    server = own_redis
    settings = engine_settings.model_copy(update={"redis_url": server.url})  # type: ignore[attr-defined]
    client = create_redis(settings.redis_url)
    resources = AppResources(settings, db=committed_database, redis=client)
    try:
        ids = []
        for _ in range(3):
            async with resources.db.sessionmaker() as session:
                task = await service.create_task(
                    session, resources.queue, client, user_id=user_id, kind="test.noop"
                )
                await session.commit()
                ids.append(task.id)
                await resources.queue.enqueue(task.id, "test.noop")
        assert await resources.queue.depth() == 3
        restarted = restart_redis(server)  # type: ignore[arg-type]
        try:
            assert await resources.queue.depth() == 0
            worker = spawn_worker(settings)
            await worker.wait_ready()
            for task_id in ids:
                await wait_status(resources, task_id, TaskStatus.succeeded, timeout=30)
        finally:
            restarted.stop()
    finally:
        await client.aclose()
