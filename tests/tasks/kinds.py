"""Task kinds used only by the tests, registered through the public ``@task`` decorator.

Worker processes started by the tests import this module via ``ATELIER_TASK_MODULES``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from backend.tasks.registry import TaskContext, TaskError, task


@task("test.steps", timeout=60, max_attempts=3, retry_delay=0.2, heartbeat=2)
async def steps(ctx: TaskContext) -> dict[str, Any]:
    count = int(ctx.payload.get("steps", 5))
    delay = float(ctx.payload.get("delay", 0.02))
    for i in range(count):
        await asyncio.sleep(delay)
        await ctx.progress(int((i + 1) * 100 / count), f"step {i + 1} of {count}")
    return {"steps": count, "attempt": ctx.attempt}


@task("test.flaky", timeout=10, max_attempts=3, retry_delay=0.1, heartbeat=2)
async def flaky(ctx: TaskContext) -> dict[str, Any]:
    await ctx.progress(10, "trying")
    if ctx.attempt < int(ctx.payload["succeed_on"]):
        raise RuntimeError(f"flaky failure on attempt {ctx.attempt}")
    return {"attempt": ctx.attempt}


@task("test.broken", timeout=10, max_attempts=2, retry_delay=0.1, heartbeat=2)
async def broken(ctx: TaskContext) -> None:
    await ctx.progress(5)
    raise ValueError("broken on purpose")


@task("test.invalid", timeout=10, max_attempts=3, retry_delay=0.1, heartbeat=2)
async def invalid(_ctx: TaskContext) -> None:
    raise TaskError("the input cannot be processed", code="test.bad_input", retry=False)


@task("test.slow", timeout=0.5, max_attempts=1, heartbeat=2)
async def slow(_ctx: TaskContext) -> None:
    await asyncio.sleep(30)


@task("test.noop", timeout=10, max_attempts=2, heartbeat=5)
async def noop(_ctx: TaskContext) -> dict[str, Any]:
    return {"ok": True}


# Hooks for the lease tests, which run a worker in their own process and event loop.
STUBBORN_SECONDS: dict[str, float] = {}
STUBBORN_DONE: dict[str, bool] = {}
RENEWAL_IN_FLIGHT: list[asyncio.Event] = []


@task("test.stubborn", timeout=1, max_attempts=1, heartbeat=1)
async def stubborn(ctx: TaskContext) -> dict[str, Any]:
    """A handler that swallows every cancellation, the way a transport can: it outlives its
    timeout and saq's, and only the lease's own limits can free its row."""
    loop = asyncio.get_running_loop()
    until = loop.time() + float(ctx.payload.get("seconds", 20))
    while loop.time() < until:
        try:
            await asyncio.sleep(until - loop.time())
        except asyncio.CancelledError:
            STUBBORN_SECONDS[str(ctx.task_id)] = STUBBORN_SECONDS.get(str(ctx.task_id), 0) + 1
    STUBBORN_DONE[str(ctx.task_id)] = True
    return {"stubborn": True}


@task("test.ends_mid_renewal", timeout=30, max_attempts=1, heartbeat=1)
async def ends_mid_renewal(_ctx: TaskContext) -> dict[str, Any]:
    """Returns exactly while a lease renewal is in flight, so the ticker's cancel lands there."""
    event = asyncio.Event()
    RENEWAL_IN_FLIGHT.append(event)
    await event.wait()
    return {"ok": True}


@task("test.heavy", timeout=120, max_attempts=3, heartbeat=2)
async def heavy(ctx: TaskContext) -> dict[str, Any]:
    """OpenCV work in a thread, which no cancellation can interrupt: long on the first attempt."""
    seconds = float(ctx.payload.get("seconds", 20)) if ctx.attempt == 1 else 0.2
    await ctx.progress(10, "drawing")
    rounds = await asyncio.to_thread(_opencv_for, seconds)
    await ctx.progress(90, "done drawing")
    return {"attempt": ctx.attempt, "rounds": rounds}


def _opencv_for(seconds: float) -> int:
    import time

    import cv2

    from tests.photos import PHOTO

    image = cv2.imread(str(PHOTO))
    assert image is not None
    until = time.monotonic() + seconds
    rounds = 0
    while time.monotonic() < until:
        cv2.bilateralFilter(image, 9, 75, 75)
        rounds += 1
    return rounds
