"""The ``thumbnails`` task: small and medium JPEGs of a stored original.

Idempotent: the keys derive from the owner and the SHA-256, so a rerun after a crash overwrites
the same objects, and images only ever move from processing to ready (or failed).
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import delete, select, update

from backend.core.db import commit, utcnow
from backend.core.pixels import run_pixels
from backend.core.resources import Resources
from backend.images.models import Blob, Image, ImageStatus, Upload
from backend.images.originals import OriginalChanged, read_original
from backend.images.thumbnails import SIZES, render_thumbnails
from backend.storage.base import ObjectNotFound
from backend.tasks.registry import TaskCanceled, TaskContext, TaskError, task
from backend.tasks.sweeper import register_chore

log = structlog.get_logger(__name__)

MAX_ATTEMPTS = 3
# Thumbnails of a given original never change, so caches may keep them for long.
THUMBNAIL_CACHE = "private, max-age=31536000, immutable"


def thumbnail_key(blob: Blob, size: str) -> str:
    return f"thumbnails/{blob.user_id}/{blob.sha256}/{size}.jpg"


async def _settle_images(
    resources: Resources, blob_id: uuid.UUID, status: ImageStatus, *, error: TaskError | None = None
) -> list[str]:
    async with resources.db.sessionmaker() as session:
        changed = await session.execute(
            update(Image)
            .where(Image.blob_id == blob_id, Image.status == ImageStatus.processing)
            .values(
                status=status,
                processed_at=utcnow(),
                error=str(error) if error else None,
                error_code=error.code if error else None,
            )
            .returning(Image.id)
        )
        ids = [str(row[0]) for row in changed.all()]
        await commit(session)
    return ids


# An upload form never confirmed is forgotten this long after it expired (a confirm may come
# late: it reads what the form wrote before it expired).
ABANDONED_AFTER = timedelta(days=1)
SWEEP_BATCH = 500


async def sweep_abandoned_uploads(resources: Resources) -> int:
    """Uploads never confirmed, ``ABANDONED_AFTER`` past their form's expiry: their staging
    objects, then their rows (a failure in between leaves rows to try again next time)."""
    cutoff = utcnow() - ABANDONED_AFTER
    async with resources.db.sessionmaker() as session:
        rows = list(
            await session.scalars(
                select(Upload)
                .where(Upload.confirmed_at.is_(None), Upload.expires_at < cutoff)
                .order_by(Upload.expires_at)
                .limit(SWEEP_BATCH)
                # A confirm holds its row: skipped here, and seen again next round if it failed.
                .with_for_update(skip_locked=True)
            )
        )
        if not rows:
            return 0
        await resources.storage.delete_many([row.storage_key for row in rows])
        await session.execute(delete(Upload).where(Upload.id.in_([row.id for row in rows])))
        await commit(session)
    log.info("abandoned_uploads_removed", count=len(rows))
    return len(rows)


register_chore(sweep_abandoned_uploads)


async def _blob_exists(resources: Resources, blob_id: uuid.UUID) -> bool:
    async with resources.db.sessionmaker() as session:
        return await session.get(Blob, blob_id) is not None


async def _record_or_remove(resources: Resources, blob_id: uuid.UUID, keys: dict[str, str]) -> bool:
    """Record the written thumbnails on the blob, or remove them if its image was deleted.

    Under the blob's row lock: a delete either committed before (then this removes what it
    wrote) or waits for this commit and then removes the thumbnails' keys itself.
    """
    async with resources.db.sessionmaker() as session:
        blob = await session.scalar(select(Blob).where(Blob.id == blob_id).with_for_update())
        if blob is not None:
            blob.thumbnails = keys
        await commit(session)
    if blob is None:
        await resources.storage.delete_many(list(keys.values()))
    return blob is not None


async def _render_and_store(ctx: TaskContext, blob: Blob) -> dict[str, str]:
    storage = ctx.resources.storage
    await ctx.progress(10, "reading the original")
    try:
        original = await read_original(storage, blob)
    except ObjectNotFound:
        if not await _blob_exists(ctx.resources, blob.id):
            # The image was deleted meanwhile: not a failure the user should see.
            raise TaskCanceled() from None
        raise TaskError(
            "The original is missing from storage.", code="thumbnails.original_missing", retry=False
        ) from None
    except OriginalChanged:
        raise TaskError(
            "The stored original is not the file that was accepted.",
            code="thumbnails.original_changed",
            retry=False,
        ) from None
    await ctx.progress(30, "rendering")
    try:
        rendered = await run_pixels(
            render_thumbnails, original, SIZES, max_pixels=ctx.resources.settings.max_image_pixels
        )
    except ValueError as exc:
        raise TaskError(str(exc), code="thumbnails.undecodable", retry=False) from None
    await ctx.progress(70, "storing")
    keys: dict[str, str] = {}
    for size, data in rendered.items():
        keys[size] = thumbnail_key(blob, size)
        await storage.put(
            keys[size], data, content_type="image/jpeg", cache_control=THUMBNAIL_CACHE
        )
    return keys


@task("thumbnails", timeout=120, max_attempts=MAX_ATTEMPTS, retry_delay=2.0)
async def make_thumbnails(ctx: TaskContext) -> dict[str, Any]:
    resources = ctx.resources
    blob_id = uuid.UUID(str(ctx.payload["blob_id"]))
    async with resources.db.sessionmaker() as session:
        blob = await session.get(Blob, blob_id)
    if blob is None:
        return {"thumbnails": [], "images": [], "skipped": "the image was deleted"}
    try:
        keys = await _render_and_store(ctx, blob)
    except TaskCanceled:
        raise
    except TaskError as exc:
        await _settle_images(resources, blob_id, ImageStatus.failed, error=exc)
        raise
    except Exception as exc:
        if ctx.attempt >= MAX_ATTEMPTS:
            # The last attempt: the images must not stay "processing" forever.
            failure = TaskError(f"Thumbnails could not be made: {exc}", code="thumbnails.failed")
            await _settle_images(resources, blob_id, ImageStatus.failed, error=failure)
        raise
    if not await _record_or_remove(resources, blob_id, keys):
        raise TaskCanceled()
    images = await _settle_images(resources, blob_id, ImageStatus.ready)
    return {"thumbnails": sorted(keys), "images": images}
