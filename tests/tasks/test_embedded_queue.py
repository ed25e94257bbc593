"""The embedded queue (fakeredis, `make run`) wakes a waiting worker instead of spinning.

fakeredis answers a blocking BLMOVE at once, so the embedded dequeue waits on an in-process
wake-up; every way a job becomes ready must ring it, or the job waits out the whole timeout.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

import tests.tasks.kinds  # noqa: F401 - registers the test task kinds
from backend.core.redis import create_redis
from backend.tasks.queue import TaskQueue

# Far longer than any wake-up may take: a dequeue that was not woken would still be waiting.
LONG_WAIT = 30.0


@pytest.fixture
async def embedded() -> AsyncIterator[TaskQueue]:
    redis = create_redis(None)
    yield TaskQueue(redis, embedded=True)
    await redis.aclose()


async def _woken_by(queue: TaskQueue, ready: Callable[[uuid.UUID], Awaitable[bool]]) -> float:
    waiting = asyncio.create_task(queue.saq.dequeue(timeout=LONG_WAIT))
    await asyncio.sleep(0.2)  # the dequeue found nothing and is now waiting
    assert not waiting.done()
    task_id = uuid.uuid4()
    started = time.monotonic()
    assert await ready(task_id)
    job = await asyncio.wait_for(waiting, LONG_WAIT / 2)
    assert job is not None
    assert job.key == str(task_id)
    return time.monotonic() - started


async def test_enqueue_wakes_a_waiting_dequeue(embedded: TaskQueue) -> None:
    await _woken_by(embedded, lambda task_id: embedded.enqueue(task_id, "test.noop"))


async def test_enqueue_front_wakes_a_waiting_dequeue(embedded: TaskQueue) -> None:
    await _woken_by(embedded, lambda task_id: embedded.enqueue_front(task_id, "test.noop"))


async def test_an_idle_dequeue_waits_without_polling(embedded: TaskQueue) -> None:
    # Count the commands fakeredis answers while a dequeue waits with nothing to do.
    calls = 0
    original = embedded.saq.redis.execute_command

    async def counting(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        return await original(*args, **kwargs)

    embedded.saq.redis.execute_command = counting  # type: ignore[method-assign]
    try:
        assert await embedded.saq.dequeue(timeout=1.0) is None
    finally:
        embedded.saq.redis.execute_command = original  # type: ignore[method-assign]
    # One look at the list (plus saq's version lookup at most), not a loop of them.
    assert calls <= 2, calls


async def test_a_dequeue_with_work_waiting_takes_it_at_once(embedded: TaskQueue) -> None:
    task_id = uuid.uuid4()
    assert await embedded.enqueue(task_id, "test.noop")
    job = await asyncio.wait_for(embedded.saq.dequeue(timeout=LONG_WAIT), LONG_WAIT / 2)
    assert job is not None
    assert job.key == str(task_id)
