"""Task metrics read from the rows and the queue at scrape time.

The rows are shared by every worker, so any API instance can report the whole system without
workers exposing ports of their own (Cloud Run worker services have none to scrape).
"""

from __future__ import annotations

import structlog
from prometheus_client import Gauge
from sqlalchemy import func, select

from backend.core.db import seconds_between
from backend.core.resources import Resources
from backend.tasks.deps import task_queue
from backend.tasks.models import Task

log = structlog.get_logger(__name__)

TASKS = Gauge("atelier_tasks", "Tasks by kind and status", ["kind", "status"])
TASK_SECONDS_SUM = Gauge(
    "atelier_task_duration_seconds_sum",
    "Total run time (last start to finish) of finished tasks by kind and status",
    ["kind", "status"],
)
TASK_SECONDS_COUNT = Gauge(
    "atelier_task_duration_seconds_count", "Finished tasks with a run time", ["kind", "status"]
)
QUEUE_DEPTH = Gauge("atelier_queue_depth", "Jobs waiting in the task queue")


async def refresh(resources: Resources) -> None:
    try:
        async with resources.db.sessionmaker() as session:
            counts = (
                await session.execute(
                    select(Task.kind, Task.status, func.count()).group_by(Task.kind, Task.status)
                )
            ).all()
            seconds = seconds_between(session, Task.started_at, Task.finished_at)
            durations = (
                await session.execute(
                    select(Task.kind, Task.status, func.sum(seconds), func.count())
                    .where(Task.finished_at.is_not(None), Task.started_at.is_not(None))
                    .group_by(Task.kind, Task.status)
                )
            ).all()
        TASKS.clear()
        for kind, status, count in counts:
            TASKS.labels(kind=kind, status=status.value).set(count)
        TASK_SECONDS_SUM.clear()
        TASK_SECONDS_COUNT.clear()
        for kind, status, total, count in durations:
            TASK_SECONDS_SUM.labels(kind=kind, status=status.value).set(float(total or 0))
            TASK_SECONDS_COUNT.labels(kind=kind, status=status.value).set(count)
        QUEUE_DEPTH.set(await task_queue(resources).depth())
    except Exception as exc:  # noqa: BLE001 - a scrape must answer even when a dependency is down
        log.warning("task_metrics_failed", error=str(exc))
