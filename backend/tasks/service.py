"""Task rows: creation with enqueue-after-commit, reads scoped to the owner, cancellation."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import Table, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.core.db import on_commit, utcnow
from backend.core.errors import Conflict, NotFound
from backend.core.pagination import PageParams, make_page, newest_first
from backend.tasks import events
from backend.tasks.models import ACTIVE_STATUSES, Task, TaskStatus
from backend.tasks.queue import TaskQueue
from backend.tasks.registry import spec_for

log = structlog.get_logger(__name__)


_TASKS: Table = Task.__table__  # type: ignore[assignment]
_INSERT = insert(_TASKS)
# Columns with nothing to say at creation, so that the object built from the values is whole.
_UNSET: dict[str, Any] = {column.key: None for column in _TASKS.c}


class TaskNotFound(NotFound):
    code = "task.not_found"


async def create_task(
    session: AsyncSession,
    queue: TaskQueue,
    redis: Redis,
    *,
    user_id: uuid.UUID,
    kind: str,
    payload: dict[str, Any] | None = None,
    image_id: uuid.UUID | None = None,
    sketch_id: uuid.UUID | None = None,
    batch_id: uuid.UUID | None = None,
) -> Task:
    """Record a task; its job is enqueued only once the caller's transaction commits."""
    spec = spec_for(kind)
    now = utcnow()
    values = {
        **_UNSET,
        "id": uuid.uuid4(),
        "created_at": now,
        "updated_at": now,
        "user_id": user_id,
        "kind": kind,
        "status": TaskStatus.queued,
        "progress": 0,
        "payload": payload or {},
        "image_id": image_id,
        "sketch_id": sketch_id,
        "batch_id": batch_id,
        "attempts": 0,
        "max_attempts": spec.max_attempts,
        "cancel_requested": False,
        "deadline_at": now + timedelta(seconds=queue.queue_grace),
    }
    # A plain INSERT of a fully known row: the ORM unit of work cost more CPU than the rest of
    # creating a task. Rows the caller added earlier (the image a task refers to) go first.
    if session.new or session.dirty or session.deleted:
        await session.flush()
    await session.execute(_INSERT, values)
    # The row as an object outside the session, every attribute set: nothing to load or expire,
    # and, as for a flushed object that is rolled back, still readable after a rollback.
    task = Task(**values)

    async def enqueue() -> None:
        # If Redis is down right now the row stays queued and the sweeper enqueues it later.
        same_redis = queue.saq.redis is redis
        try:
            if same_redis:
                # The job and the "queued" event in one round trip.
                await queue.enqueue_with(task.id, kind, lambda pipe: events.stage(pipe, task))
            else:
                await queue.enqueue(task.id, kind)
        except Exception as exc:  # noqa: BLE001 - any enqueue failure is repaired by the sweeper
            log.warning("enqueue_failed", task_id=str(task.id), error=str(exc))
        if not same_redis:
            await events.publish(redis, task)

    on_commit(session, enqueue)
    return task


@dataclass(frozen=True)
class DoneInline:
    """Work a caller did itself that users still see as a task of ``kind`` (a batch renders an
    image's thumbnails from the pixels it decoded anyway): recorded as succeeded at once."""

    user_id: uuid.UUID
    kind: str
    payload: dict[str, Any]
    result: dict[str, Any]
    image_id: uuid.UUID | None = None


async def record_done(session: AsyncSession, redis: Redis, done: list[DoneInline]) -> list[Task]:
    """Task rows for ``done`` as their first attempt leaves them on success, in one insert, and
    their events once the caller's transaction commits."""
    if not done:
        return []
    now = utcnow()
    tasks = [
        Task(
            **{
                **_UNSET,
                "id": uuid.uuid4(),
                "user_id": item.user_id,
                "kind": item.kind,
                "status": TaskStatus.succeeded,
                "progress": 100,
                "message": "done",
                "payload": item.payload,
                "result": item.result,
                "image_id": item.image_id,
                "attempts": 1,
                "max_attempts": spec_for(item.kind).max_attempts,
                "cancel_requested": False,
                "started_at": now,
                "finished_at": now,
                "created_at": now,
                "updated_at": now,
            }
        )
        for item in done
    ]
    await session.execute(
        _INSERT, [{c.key: getattr(task, c.key) for c in _TASKS.c} for task in tasks]
    )
    on_commit(session, lambda: _announce(redis, tasks))
    return tasks


async def _announce(redis: Redis, finished: list[Task]) -> None:
    """The events of tasks recorded as finished, in one round trip; like ``events.publish``,
    a lost event is repaired by the next snapshot, so a Redis hiccup fails nothing."""
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for task in finished:
                events.stage(pipe, task)
            await pipe.execute()
    except (RedisError, OSError) as exc:
        log.warning("task_event_publish_failed", tasks=len(finished), error=str(exc))


async def get_task(session: AsyncSession, *, user_id: uuid.UUID, task_id: uuid.UUID) -> Task:
    task = await session.get(Task, task_id)
    # Another user's task answers exactly like a missing one.
    if task is None or task.user_id != user_id:
        raise TaskNotFound("No such task.")
    return task


async def list_tasks(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    page: PageParams,
    status: TaskStatus | None = None,
) -> tuple[list[Task], str | None]:
    stmt = select(Task).where(Task.user_id == user_id)
    if status is not None:
        stmt = stmt.where(Task.status == status)
    return make_page(
        list(await session.scalars(newest_first(stmt, Task.created_at, Task.id, page))), page
    )


async def active_tasks(session: AsyncSession, *, user_id: uuid.UUID) -> list[Task]:
    stmt = (
        select(Task)
        .where(Task.user_id == user_id, Task.status.in_(ACTIVE_STATUSES))
        .order_by(Task.created_at, Task.id)
    )
    return list(await session.scalars(stmt))


async def changed_tasks(
    session: AsyncSession, *, user_id: uuid.UUID, since: datetime, limit: int
) -> list[Task]:
    """The user's tasks changed at or after ``since`` (finished ones too), newest first."""
    stmt = (
        select(Task)
        .where(Task.user_id == user_id, Task.updated_at >= since)
        .order_by(Task.updated_at.desc(), Task.id)
        .limit(limit)
    )
    return list(await session.scalars(stmt))


async def cancel_task(
    session: AsyncSession, redis: Redis, *, user_id: uuid.UUID, task_id: uuid.UUID
) -> Task:
    """A queued task is canceled at once; a running one at its next progress checkpoint."""
    task = await get_task(session, user_id=user_id, task_id=task_id)
    # Lock the row so a worker starting it right now cannot slip between read and write.
    await session.refresh(task, with_for_update=True)
    if task.status.finished:
        raise Conflict(f"The task has already {task.status.value}.", code="task.already_finished")
    task.cancel_requested = True
    if task.status == TaskStatus.queued:
        task.status = TaskStatus.canceled
        task.finished_at = utcnow()
        task.message = "canceled"
    await session.flush()

    async def announce() -> None:
        await events.publish(redis, task)

    on_commit(session, announce)
    return task


@dataclass
class TaskSummary:
    by_kind: dict[str, dict[str, int]]
    failed_by_code: dict[str, int]
    oldest_queued_at: datetime | None
    recent_failures: list[Task]

    @property
    def by_status(self) -> dict[str, int]:
        totals = dict.fromkeys(TaskStatus, 0)
        for counts in self.by_kind.values():
            for status, count in counts.items():
                totals[TaskStatus(status)] += count
        return {status.value: count for status, count in totals.items()}


async def summary(session: AsyncSession, *, failures: int) -> TaskSummary:
    """Every user's tasks at a glance, for admins: counts by kind and status, recent failures."""
    by_kind: dict[str, dict[str, int]] = {}
    counted = await session.execute(
        select(Task.kind, Task.status, func.count()).group_by(Task.kind, Task.status)
    )
    for kind, status, count in counted:
        by_kind.setdefault(kind, {s.value: 0 for s in TaskStatus})[TaskStatus(status).value] = count
    codes: dict[str, int] = {}
    for code, count in await session.execute(
        select(Task.error_code, func.count())
        .where(Task.status == TaskStatus.failed)
        .group_by(Task.error_code)
    ):
        codes[code or "unknown"] = codes.get(code or "unknown", 0) + count
    oldest = await session.scalar(
        select(func.min(Task.created_at)).where(Task.status == TaskStatus.queued)
    )
    recent = await session.scalars(
        select(Task)
        .where(Task.status == TaskStatus.failed)
        .order_by(Task.updated_at.desc(), Task.id.desc())
        .limit(failures)
    )
    return TaskSummary(
        by_kind=dict(sorted(by_kind.items())),
        failed_by_code=dict(sorted(codes.items(), key=lambda kv: (-kv[1], kv[0]))),
        oldest_queued_at=oldest,
        recent_failures=list(recent),
    )
