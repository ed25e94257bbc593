"""Fast recovery: recovered work jumps the queue, and a SIGTERM'd worker exits in time even
with uninterruptible OpenCV work in flight. Real Postgres, Redis and worker processes."""

from __future__ import annotations

import asyncio
import time
import uuid

from redis.asyncio import Redis
from sqlalchemy import update

from backend.composition import AppResources
from backend.tasks.events import CHANNEL, decode_event
from backend.tasks.models import Task, TaskStatus
from backend.tasks.sweeper import sweep_once
from backend.tasks.worker import running_worker
from tests.tasks.conftest import CreateTask, SpawnWorker, load, wait_for, wait_status


async def _queued_keys(resources: AppResources, redis: Redis) -> list[str]:
    saq = resources.queue.saq
    ids = await redis.lrange(saq._queued, 0, -1)  # noqa: SLF001 - the wire order is the point
    return [saq.job_key_from_id(i.decode() if isinstance(i, bytes) else i) for i in ids]


async def test_enqueue_front_goes_ahead_of_waiting_work_and_dedupes(
    resources: AppResources, create_task: CreateTask, redis: Redis
) -> None:
    waiting = [await create_task("test.noop") for _ in range(3)]
    urgent = await create_task("test.noop")
    await redis.delete(resources.queue.saq.namespace("queued"))  # as if its job was lost
    await redis.delete(resources.queue.saq.job_id(str(urgent)))
    await redis.zrem(
        resources.queue.saq.namespace("incomplete"), resources.queue.saq.job_id(str(urgent))
    )
    for task_id in waiting:
        await redis.rpush(
            resources.queue.saq.namespace("queued"), resources.queue.saq.job_id(str(task_id))
        )
    assert await resources.queue.enqueue_front(urgent, "test.noop") is True
    assert await resources.queue.enqueue_front(urgent, "test.noop") is False
    assert await _queued_keys(resources, redis) == [str(urgent), *map(str, waiting)]


async def test_the_sweeper_puts_a_recovered_task_at_the_front(
    resources: AppResources, create_task: CreateTask, redis: Redis
) -> None:
    lost = await create_task("test.noop")
    backlog = [await create_task("test.noop") for _ in range(3)]
    # Its worker died mid-run: the row is running with an expired lease, saq's job is stale.
    saq = resources.queue.saq
    await redis.lrem(saq.namespace("queued"), 0, saq.job_id(str(lost)))
    async with resources.db.sessionmaker() as session:
        await session.execute(
            update(Task)
            .where(Task.id == lost)
            .values(status=TaskStatus.running, attempts=1, deadline_at=Task.created_at)
        )
        await session.commit()
    report = await sweep_once(resources)
    assert report.requeued == [str(lost)]
    assert await _queued_keys(resources, redis) == [str(lost), *map(str, backlog)]


async def test_sigterm_exits_in_time_with_opencv_threads_busy(
    resources: AppResources, create_task: CreateTask, spawn_worker: SpawnWorker
) -> None:
    first = spawn_worker()
    await first.wait_ready()
    ids: list[uuid.UUID] = [await create_task("test.heavy", seconds=40) for _ in range(2)]
    for task_id in ids:
        await wait_for(
            resources,
            task_id,
            lambda t: t.status == TaskStatus.running and t.progress >= 10,
            what="drawing",
        )
    await asyncio.sleep(0.5)  # well inside the uninterruptible OpenCV loop
    first.terminate()
    stopped = time.monotonic()
    while first.proc.poll() is None:
        assert time.monotonic() - stopped < 8, "the worker did not exit within 8 s of SIGTERM"
        await asyncio.sleep(0.05)
    exited_after = time.monotonic() - stopped
    assert first.proc.returncode == 0, first.log()[-2000:]
    assert "abandoned_threads" in first.log()
    for task_id in ids:
        released = await load(resources, task_id)
        assert released.status == TaskStatus.queued, released.message
        assert released.attempts == 1

    second = spawn_worker()
    await second.wait_ready()
    for task_id in ids:
        task = await wait_status(resources, task_id, TaskStatus.succeeded, timeout=40)
        assert task.attempts == 2
        assert task.result is not None
        assert task.result["attempt"] == 2
    print(f"\nSIGTERM → exit {exited_after:.1f} s with OpenCV threads busy")  # noqa: T201


async def test_a_job_taken_by_a_worker_that_died_before_its_claim_is_recovered(
    resources: AppResources, create_task: CreateTask, redis: Redis
) -> None:
    task_id = await create_task("test.noop")
    saq = resources.queue.saq
    # A worker took the job (atomically into the active list) and died before claiming the row:
    # saq's record still says queued, since the worker no longer writes "active" at take time.
    taken = await saq.dequeue()
    assert taken is not None
    assert taken.key == str(task_id)
    assert (await saq.job(str(task_id))).status == "queued"  # type: ignore[union-attr]
    assert await resources.queue.job_status(task_id) == "active"
    async with resources.db.sessionmaker() as session:
        await session.execute(
            update(Task).where(Task.id == task_id).values(deadline_at=Task.created_at)
        )
        await session.commit()
    report = await sweep_once(resources)
    # Not mistaken for a job still waiting in line: re-enqueued, and it runs.
    assert report.requeued == [str(task_id)]
    assert report.deferred == 0
    assert await _queued_keys(resources, redis) == [str(task_id)]


async def test_a_run_completes_its_job_with_the_final_event(
    resources: AppResources, create_task: CreateTask, redis: Redis
) -> None:
    task_id = await create_task("test.noop")
    saq = resources.queue.saq
    job_id = saq.job_id(str(task_id))
    pubsub = redis.pubsub()
    await pubsub.subscribe(CHANNEL)
    try:
        async with running_worker(resources):
            while True:
                message = await pubsub.get_message(timeout=10.0)
                assert message is not None, "no final event"
                if message["type"] != "message":
                    continue
                _, event = decode_event(message["data"])
                if event["task"]["status"] == "succeeded":
                    break
            # Sent in the same MULTI as the event: done by the time it is read.
            job = await saq.job(str(task_id))
            assert job is not None
            assert (job.status, job.result) == ("complete", {"ok": True})
            assert await redis.lpos(saq.namespace("active"), job_id) is None
            assert await redis.zscore(saq.namespace("incomplete"), job_id) is None
    finally:
        await pubsub.aclose()
    assert (await load(resources, task_id)).status == TaskStatus.succeeded


async def test_takes_block_at_once_only_while_the_queue_is_drained(
    resources: AppResources, create_task: CreateTask
) -> None:
    saq = resources.queue.saq
    assert await saq.dequeue(timeout=0.1) is None  # found empty: the next take blocks at once
    assert saq._drained  # noqa: SLF001 - the mode is the point
    first, second = await create_task("test.noop"), await create_task("test.noop")
    taken = await saq.dequeue(timeout=1)
    assert taken is not None
    assert taken.key == str(first)
    # Work was waiting behind it: back to taking without a blocking wait.
    assert not saq._drained  # noqa: SLF001
    taken = await saq.dequeue(timeout=1)
    assert taken is not None
    assert taken.key == str(second)
    assert await resources.queue.job_status(second) == "active"
