"""The ``sketch`` task: original → reduced decode → style → encoded result in storage.

Idempotent: the result key derives from the sketch id, so a rerun overwrites the same object.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from sqlalchemy import update

from backend.core.db import commit
from backend.core.pixels import run_pixels
from backend.images.models import Blob, Image
from backend.images.originals import OriginalChanged, read_original
from backend.sketches.models import Sketch
from backend.sketches.service import CONTENT_TYPES, result_key
from backend.sketches.styles import SketchParams, encode, load, output_format, render
from backend.storage.base import ObjectNotFound
from backend.tasks.registry import TaskCanceled, TaskContext, TaskError, task

# Thumbnail-sized work is ~0.1 s and a 12 MP sketch well under a second; the timeout only
# bounds a pathological input.
TIMEOUT_SECONDS = 120


@task("sketch", timeout=TIMEOUT_SECONDS, max_attempts=3, retry_delay=2.0)
async def make_sketch(ctx: TaskContext) -> dict[str, Any]:
    resources = ctx.resources
    sketch_id = uuid.UUID(str(ctx.payload["sketch_id"]))
    async with resources.db.sessionmaker() as session:
        sketch = await session.get(Sketch, sketch_id)
        image = await session.get(Image, sketch.image_id) if sketch else None
        blob = await session.get(Blob, image.blob_id) if image and image.blob_id else None
    if sketch is None or blob is None:
        # Deleted while queued: nothing to make.
        raise TaskCanceled()
    params = SketchParams(**sketch.params)
    fmt = output_format(sketch.style, params)
    await ctx.progress(5, "reading the original")
    try:
        original = await read_original(resources.storage, blob)
    except ObjectNotFound:
        raise TaskError(
            "The original is missing from storage.", code="sketch.original_missing", retry=False
        ) from None
    except OriginalChanged:
        raise TaskError(
            "The stored original is not the file that was accepted.",
            code="sketch.original_changed",
            retry=False,
        ) from None
    started = time.perf_counter()
    await ctx.progress(20, "decoding")
    try:
        pixels = await run_pixels(
            load,
            original,
            max_side=params.max_side,
            # The limit the upload was accepted under: a lower one would fail accepted images.
            max_pixels=ctx.resources.settings.max_image_pixels,
        )
    except ValueError as exc:
        raise TaskError(str(exc), code="sketch.undecodable", retry=False) from None
    await ctx.progress(40, f"drawing in {sketch.style}")
    drawn = await run_pixels(render, pixels, sketch.style, sketch.method, params)
    await ctx.progress(75, "encoding")
    data = await run_pixels(encode, drawn, fmt)
    elapsed_ms = round((time.perf_counter() - started) * 1000)
    await ctx.progress(90, "storing")
    key = result_key(sketch, fmt)
    content_type = CONTENT_TYPES[fmt]
    await resources.storage.put(key, data, content_type=content_type)
    height, width = drawn.shape[:2]
    async with resources.db.sessionmaker() as session:
        stored = await session.execute(
            update(Sketch)
            .where(Sketch.id == sketch_id)
            .values(
                result_key=key,
                content_type=content_type,
                width=width,
                height=height,
                processing_time_ms=elapsed_ms,
            )
        )
        await commit(session)
    if stored.rowcount == 0:  # type: ignore[attr-defined]
        # Deleted while rendering: do not leave the orphan behind.
        await resources.storage.delete(key)
        raise TaskCanceled()
    return {"width": width, "height": height, "bytes": len(data), "processing_time_ms": elapsed_ms}
