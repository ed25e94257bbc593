"""The task queue of an app instance, a component the composition root provides."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from backend.core.resources import Component, Resources, ResourcesDep
from backend.tasks.queue import TaskQueue

QUEUE: Component[TaskQueue] = Component("the task queue")


def task_queue(resources: Resources) -> TaskQueue:
    return QUEUE.of(resources)


async def _queue_dep(resources: ResourcesDep) -> TaskQueue:
    return task_queue(resources)


QueueDep = Annotated[TaskQueue, Depends(_queue_dep)]
