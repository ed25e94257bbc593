"""Where pixel work runs: worker threads, at most one per core at a time.

OpenCV releases the GIL, so threads give real parallelism while the event loop keeps serving
heartbeats and events. Each operation runs single-threaded inside OpenCV and the semaphore
allows one per core, so concurrent tasks never oversubscribe the machine.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import cv2

P = ParamSpec("P")
R = TypeVar("R")

CORES = max(1, os.cpu_count() or 1)
cv2.setNumThreads(1)
_slots: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}


def _semaphore() -> asyncio.Semaphore:
    # One per event loop: a semaphore is bound to the loop it is first used on.
    loop = asyncio.get_running_loop()
    if loop not in _slots:
        _slots[loop] = asyncio.Semaphore(CORES)
    return _slots[loop]


async def run_pixels(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    async with _semaphore():
        return await asyncio.to_thread(fn, *args, **kwargs)
