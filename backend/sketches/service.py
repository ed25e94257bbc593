"""Sketch requests: creation as a task on an owned image, reads, deletion with the result."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.core.db import on_commit
from backend.core.errors import AppError, NotFound
from backend.core.pagination import PageParams, make_page, newest_first
from backend.images import service as images
from backend.images.models import ImageStatus
from backend.sketches.models import Sketch
from backend.sketches.schemas import CreateIn, SketchOut, SketchStatus
from backend.sketches.styles import default_format
from backend.storage.base import Storage
from backend.tasks import service as tasks
from backend.tasks.models import Task, TaskStatus
from backend.tasks.queue import TaskQueue

SKETCH_KIND = "sketch"
CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


class SketchNotFound(NotFound):
    code = "sketch.not_found"


def result_key(sketch: Sketch, fmt: str) -> str:
    # Under the image's prefix, derived from ids only: a rerun overwrites the same object.
    return f"sketches/{sketch.user_id}/{sketch.image_id}/{sketch.id}.{fmt}"


async def create_sketch(
    session: AsyncSession,
    queue: TaskQueue,
    redis: Redis,
    *,
    user_id: uuid.UUID,
    body: CreateIn,
) -> tuple[Sketch, Task]:
    image = await images.get_image(session, user_id=user_id, image_id=body.image_id)
    if image.status == ImageStatus.failed or image.blob_id is None:
        raise AppError(
            "This image failed validation and cannot be sketched.",
            code="sketch.image_failed",
            status=409,
        )
    params = body.params.model_dump()
    # Stored resolved, so the record says what the result is and the task never guesses.
    params["format"] = params["format"] or default_format(body.style)
    sketch = Sketch(
        id=uuid.uuid4(),
        user_id=user_id,
        image_id=image.id,
        style=body.style,
        method=body.method,
        params=params,
    )
    session.add(sketch)
    await session.flush()
    task = await tasks.create_task(
        session,
        queue,
        redis,
        user_id=user_id,
        kind=SKETCH_KIND,
        payload={"sketch_id": str(sketch.id)},
        image_id=image.id,
        sketch_id=sketch.id,
    )
    sketch.task_id = task.id
    await session.flush()
    return sketch, task


def status_of(sketch: Sketch, task: Task | None) -> SketchStatus:
    if sketch.result_key is not None:
        return "ready"
    if task is None:
        return "failed"
    return {
        TaskStatus.failed: "failed",
        TaskStatus.canceled: "canceled",
    }.get(task.status, "processing")  # type: ignore[return-value]


# Features that add links to a sketch's resource (signed delivery URLs) register here.
SketchLinks = Callable[[Sketch], dict[str, str] | None]
_sketch_links: list[SketchLinks] = []


def register_sketch_links(links: SketchLinks) -> None:
    _sketch_links.append(links)


def _links(sketch: Sketch) -> dict[str, str] | None:
    found: dict[str, str] = {}
    for links in _sketch_links:
        found.update(links(sketch) or {})
    return found or None


def to_out(sketch: Sketch, task: Task | None) -> SketchOut:
    status = status_of(sketch, task)
    return SketchOut(
        id=sketch.id,
        image_id=sketch.image_id,
        style=sketch.style,
        method=sketch.method,
        params=sketch.params,
        status=status,
        task_id=sketch.task_id,
        result_url=f"/api/sketch/{sketch.id}/result" if status == "ready" else None,
        delivery=_links(sketch) if status == "ready" else None,
        width=sketch.width,
        height=sketch.height,
        created_at=sketch.created_at,
        processing_time_ms=sketch.processing_time_ms,
        error=task.error if task is not None and status == "failed" else None,
    )


async def get_sketch(session: AsyncSession, *, user_id: uuid.UUID, sketch_id: uuid.UUID) -> Sketch:
    sketch = await session.get(Sketch, sketch_id)
    # Another user's sketch answers exactly like a missing one.
    if sketch is None or sketch.user_id != user_id:
        raise SketchNotFound("No such sketch.")
    return sketch


async def find_sketch(session: AsyncSession, sketch_id: uuid.UUID) -> Sketch | None:
    """Any user's sketch: for features whose access rule is not the session's user."""
    return await session.get(Sketch, sketch_id)


# Features that store objects derived from a sketch (delivery variants) register how to find
# them, so deleting the sketch removes those bytes too.
DerivedKeys = Callable[[AsyncSession, uuid.UUID], Awaitable[list[str]]]
_derived_keys: list[DerivedKeys] = []


def register_derived_keys(finder: DerivedKeys) -> None:
    _derived_keys.append(finder)


async def sketch_out(session: AsyncSession, sketch: Sketch) -> SketchOut:
    task = await session.get(Task, sketch.task_id) if sketch.task_id else None
    return to_out(sketch, task)


async def list_sketches(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    page: PageParams,
    image_id: uuid.UUID | None = None,
) -> tuple[list[SketchOut], str | None]:
    query = select(Sketch).where(Sketch.user_id == user_id)
    if image_id is not None:
        # Another user's image id simply matches nothing: the list is per user already.
        query = query.where(Sketch.image_id == image_id)
    stmt = newest_first(query, Sketch.created_at, Sketch.id, page)
    rows, cursor = make_page(list(await session.scalars(stmt)), page)
    task_ids = [row.task_id for row in rows if row.task_id]
    found = list(await session.scalars(select(Task).where(Task.id.in_(task_ids))))
    by_id = {task.id: task for task in found}
    return [to_out(row, by_id.get(row.task_id) if row.task_id else None) for row in rows], cursor


async def delete_sketch(
    session: AsyncSession,
    storage: Storage,
    redis: Redis,
    *,
    user_id: uuid.UUID,
    sketch_id: uuid.UUID,
) -> None:
    sketch = await get_sketch(session, user_id=user_id, sketch_id=sketch_id)
    if sketch.task_id is not None:
        task = await session.get(Task, sketch.task_id)
        if task is not None and not task.status.finished:
            # The worker finds the sketch gone at its next step and stops there.
            await tasks.cancel_task(session, redis, user_id=user_id, task_id=task.id)
    keys = [sketch.result_key] if sketch.result_key is not None else []
    for finder in _derived_keys:
        keys.extend(await finder(session, sketch.id))
    await session.delete(sketch)
    await session.flush()
    if keys:

        async def remove_result() -> None:
            await storage.delete_many(keys)

        on_commit(session, remove_result)


async def _result_keys_of_image(session: AsyncSession, image_id: uuid.UUID) -> list[str]:
    keys = await session.scalars(
        select(Sketch.result_key).where(Sketch.image_id == image_id, Sketch.result_key.is_not(None))
    )
    return [key for key in keys if key]


images.register_derived_keys(_result_keys_of_image)
