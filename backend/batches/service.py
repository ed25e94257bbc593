"""Batches: CSV intake, per-URL items, reads scoped to the owner, the output CSV."""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import structlog
from redis.asyncio import Redis
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.auth.models import User
from backend.batches import csvio
from backend.batches.fetch import FetchError, FetchPolicy, check_url
from backend.batches.models import (
    Batch,
    BatchItem,
    BatchStatus,
    ItemStatus,
    WebhookDelivery,
    settled_status,
)
from backend.config import Settings
from backend.core.db import on_commit
from backend.core.errors import AppError, Conflict, NotFound
from backend.core.pagination import PageParams, make_page, newest_first
from backend.delivery import service as delivery
from backend.storage.base import Storage, StorageError
from backend.tasks import service as tasks
from backend.tasks.models import Task, TaskStatus
from backend.tasks.queue import TaskQueue

BATCH_KIND = "batch"
THUMBNAIL_SIDE = 200  # the gallery's small size, so a browser may reuse what it has cached
log = structlog.get_logger(__name__)


class BatchNotFound(NotFound):
    code = "batch.not_found"


class BatchInProgress(Conflict):
    code = "batch.in_progress"


def fetch_policy(settings: Settings) -> FetchPolicy:
    return FetchPolicy(
        max_bytes=settings.fetch_max_bytes,
        connect_timeout=settings.fetch_connect_timeout_seconds,
        total_timeout=settings.fetch_total_timeout_seconds,
        allow_loopback_hosts=frozenset(settings.fetch_allow_loopback_hosts),
    )


def csv_limits(settings: Settings) -> csvio.CsvLimits:
    return csvio.CsvLimits(
        max_bytes=settings.batch_max_csv_bytes,
        max_rows=settings.batch_max_rows,
        max_urls_per_row=settings.batch_max_urls_per_row,
        max_urls_total=settings.batch_max_urls_total,
    )


async def create_batch(
    session: AsyncSession,
    queue: TaskQueue,
    redis: Redis,
    settings: Settings,
    *,
    user_id: uuid.UUID,
    filename: str,
    data: bytes,
    quality: int,
    webhook_url: str | None,
) -> tuple[Batch, Task]:
    try:
        parsed = csvio.parse(data, csv_limits(settings))
    except csvio.CsvRejected as exc:
        errors = [{"line": e.line, "message": e.message} for e in exc.errors]
        raise AppError(str(exc), code=exc.code, status=422, errors=errors) from None
    if webhook_url:
        try:
            # The address is checked again, after DNS resolution, when the webhook is sent.
            check_url(webhook_url, fetch_policy(settings))
        except FetchError as exc:
            raise AppError(
                f"The webhook URL is not acceptable: {exc}",
                code="batch.invalid_webhook",
                status=422,
            ) from None
    batch = Batch(
        id=uuid.uuid4(),
        user_id=user_id,
        filename=filename[:255],
        quality=quality,
        webhook_url=webhook_url or None,
        header=parsed.header,
        rows=[{"line": row.line, "values": row.values} for row in parsed.rows],
        total_images=sum(len(row.urls) for row in parsed.rows),
    )
    session.add(batch)
    session.add_all(
        BatchItem(batch_id=batch.id, line=row.line, position=position, url=url)
        for row in parsed.rows
        for position, url in enumerate(row.urls)
    )
    await session.flush()
    task = await tasks.create_task(
        session,
        queue,
        redis,
        user_id=user_id,
        kind=BATCH_KIND,
        payload={"batch_id": str(batch.id)},
        batch_id=batch.id,
    )
    batch.task_id = task.id
    await session.flush()
    return batch, task


async def get_batch(session: AsyncSession, *, user_id: uuid.UUID, batch_id: uuid.UUID) -> Batch:
    batch = await session.get(Batch, batch_id)
    # Another user's batch answers exactly like a missing one.
    if batch is None or batch.user_id != user_id:
        raise BatchNotFound("No such batch.")
    return batch


async def delete_batch(
    session: AsyncSession, *, storage: Storage, user_id: uuid.UUID, batch_id: uuid.UUID
) -> None:
    """Forget a finished batch: its row, items, webhook log and compressed outputs. The images
    it imported stay: they are the user's images, listed and deleted like any other."""
    batch = await get_batch(session, user_id=user_id, batch_id=batch_id)
    task = await session.get(Task, batch.task_id) if batch.task_id else None
    if task is not None:
        # Locked, so the worker cannot start the task between this check and the delete.
        await session.refresh(task, with_for_update=True)
        if not task.status.finished:
            # A running worker would go on writing items and outputs of a deleted batch.
            raise BatchInProgress("The batch is still running; cancel it first, then delete it.")
    keys = [
        key
        for key in await session.scalars(
            select(BatchItem.output_key).where(
                BatchItem.batch_id == batch.id, BatchItem.output_key.is_not(None)
            )
        )
        if key
    ]
    await session.execute(delete(WebhookDelivery).where(WebhookDelivery.batch_id == batch.id))
    await session.execute(delete(BatchItem).where(BatchItem.batch_id == batch.id))
    await session.delete(batch)
    await session.flush()

    async def remove_outputs() -> None:
        # After the commit only: a rolled-back delete must still find its outputs.
        try:
            await storage.delete_many(keys)
        except StorageError as exc:
            log.warning("batch_outputs_delete_failed", batch_id=str(batch_id), error=str(exc))

    if keys:
        on_commit(session, remove_outputs)


async def item_counts(
    session: AsyncSession, batch_ids: list[uuid.UUID]
) -> dict[uuid.UUID, tuple[int, int]]:
    """(succeeded, failed) items per batch, in one query; pending items are in neither."""
    rows = await session.execute(
        select(BatchItem.batch_id, BatchItem.status, func.count())
        .where(BatchItem.batch_id.in_(batch_ids), BatchItem.status != ItemStatus.pending)
        .group_by(BatchItem.batch_id, BatchItem.status)
    )
    counts: dict[uuid.UUID, tuple[int, int]] = {}
    for batch_id, status, n in rows.all():
        succeeded, failed = counts.get(batch_id, (0, 0))
        if status == ItemStatus.failed:
            counts[batch_id] = (succeeded, failed + n)
        else:
            counts[batch_id] = (succeeded + n, failed)
    return counts


def batch_status(task: Task | None, succeeded: int, failed: int) -> BatchStatus:
    """The task's status until it has succeeded, then the items' verdict."""
    if task is None:
        return BatchStatus.failed
    if task.status == TaskStatus.succeeded:
        return settled_status(succeeded, failed)
    return BatchStatus(task.status.value)


def batch_json(batch: Batch, task: Task | None, counts: tuple[int, int] = (0, 0)) -> dict[str, Any]:
    return {
        "id": batch.id,
        "filename": batch.filename,
        "status": batch_status(task, *counts),
        "progress": task.progress if task else 0,
        "quality": batch.quality,
        "webhook_url": batch.webhook_url,
        "total_images": batch.total_images,
        # Successes only: an image that failed was tried, not processed.
        "processed_images": counts[0],
        "failed_images": counts[1],
        "task_id": batch.task_id,
        "created_at": batch.created_at,
        # The instant the batch task recorded and sent in its webhook, else the task's end.
        "finished_at": (task.result or {}).get("finished_at") or task.finished_at if task else None,
    }


def _count_of(status: ItemStatus) -> Any:
    return (
        select(func.count())
        .where(BatchItem.batch_id == Batch.id, BatchItem.status == status)
        .correlate(Batch)
        .scalar_subquery()
    )


async def batch_view(
    session: AsyncSession, *, user_id: uuid.UUID, batch_id: uuid.UUID
) -> dict[str, Any]:
    """The user's batch as the API shows it, in one statement (the batch, its task and its counts):
    what clients poll while a batch runs."""
    row = (
        await session.execute(
            select(Batch, Task, _count_of(ItemStatus.succeeded), _count_of(ItemStatus.failed))
            .outerjoin(Task, Task.id == Batch.task_id)
            .where(Batch.id == batch_id)
        )
    ).first()
    # Another user's batch answers exactly like a missing one.
    if row is None or row[0].user_id != user_id:
        raise BatchNotFound("No such batch.")
    batch, task, succeeded, failed = row
    return batch_json(batch, task, (succeeded, failed))


async def list_batches(
    session: AsyncSession, *, user_id: uuid.UUID, page: PageParams
) -> tuple[list[dict[str, Any]], str | None]:
    stmt = newest_first(
        select(Batch).where(Batch.user_id == user_id), Batch.created_at, Batch.id, page
    )
    rows, cursor = make_page(list(await session.scalars(stmt)), page)
    task_ids = [row.task_id for row in rows if row.task_id]
    found = list(await session.scalars(select(Task).where(Task.id.in_(task_ids))))
    by_id = {task.id: task for task in found}
    counts = await item_counts(session, [row.id for row in rows])
    return [
        batch_json(row, by_id.get(row.task_id) if row.task_id else None, counts.get(row.id, (0, 0)))
        for row in rows
    ], cursor


async def items_of(session: AsyncSession, batch: Batch) -> list[BatchItem]:
    stmt = (
        select(BatchItem)
        .where(BatchItem.batch_id == batch.id)
        .order_by(BatchItem.line, BatchItem.position)
    )
    return list(await session.scalars(stmt))


def output_url(settings: Settings, item: BatchItem, *, quality: int) -> str:
    """A signed delivery URL (opens without cookies anywhere: shop fronts, feeds, e-mails) of
    the item's image as a JPEG at the batch's quality; the cookie route once the image is gone.
    The one place an item's output URL is made (items endpoint, output CSV, webhook)."""
    if item.image_id is not None:
        return delivery.image_url(settings, item.image_id, fmt="jpeg", quality=quality)
    return f"{settings.public_base_url}/api/batches/{item.batch_id}/items/{item.id}/output"


def thumbnail_url(settings: Settings, item: BatchItem) -> str | None:
    """A small signed preview of an item's output (format chosen by the browser's Accept)."""
    if item.status != ItemStatus.succeeded or item.image_id is None:
        return None
    return delivery.image_url(settings, item.image_id, fmt="auto", side=THUMBNAIL_SIDE)


def output_csv(batch: Batch, items: list[BatchItem], settings: Settings) -> bytes:
    parsed = csvio.ParsedCsv(
        header=list(batch.header),
        rows=[
            csvio.BatchRow(
                line=row["line"], serial="", product_name="", urls=[], values=list(row["values"])
            )
            for row in batch.rows
        ],
    )
    outcomes: dict[int, dict[str, csvio.Outcome]] = {}
    for item in items:
        url = (
            output_url(settings, item, quality=batch.quality)
            if item.status == ItemStatus.succeeded
            else None
        )
        code = (item.error_code or "unknown") if item.status == ItemStatus.failed else None
        outcomes.setdefault(item.line, {})[item.url] = csvio.Outcome(url, code)
    return csvio.write_output(parsed, outcomes)


async def webhook_secret(session: AsyncSession, *, user: User) -> str:
    if user.webhook_secret is None:
        user.webhook_secret = "whsec_" + secrets.token_hex(24)
        await session.flush()
    return user.webhook_secret
