"""The ``caption`` and ``edit`` tasks: provider calls behind the result cache.

Both are idempotent: a caption rerun writes the same fields, and an edit's new image is named
after the task, so a rerun after a crash finds the image it already made instead of adding one.
"""

from __future__ import annotations

import uuid
from pathlib import PurePosixPath
from typing import Any

from sqlalchemy import select, update

from backend.ai.cache import AiCache, cache_key
from backend.ai.deps import ai_providers
from backend.ai.providers.base import Caption, Provider, ProviderError
from backend.auth.models import User
from backend.core.db import commit
from backend.core.resources import Resources
from backend.images import service as images
from backend.images.models import Blob, Image
from backend.images.originals import OriginalChanged, read_original
from backend.images.validation import sniff_format
from backend.storage.base import ObjectNotFound
from backend.tasks.registry import TaskContext, TaskError, task

MIMES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp", "gif": "image/gif"}


def _provider(resources: Resources, name: str) -> Provider:
    provider = ai_providers(resources).get(name)
    if provider is None:
        raise TaskError(
            f"The {name!r} provider is not configured on this worker.",
            code="ai.provider_unavailable",
            retry=False,
        )
    return provider


def _task_error(exc: ProviderError) -> TaskError:
    return TaskError(str(exc), code=exc.code, retry=exc.retryable)


async def _original(resources: Resources, image_id: uuid.UUID) -> tuple[Image, Blob, bytes]:
    async with resources.db.sessionmaker() as session:
        image = await session.get(Image, image_id)
        blob = await session.get(Blob, image.blob_id) if image and image.blob_id else None
    if image is None or blob is None:
        raise TaskError("The image is gone.", code="ai.image_gone", retry=False)
    try:
        data = await read_original(resources.storage, blob)
    except ObjectNotFound:
        raise TaskError(
            "The original is missing from storage.", code="ai.original_missing", retry=False
        ) from None
    except OriginalChanged:
        raise TaskError(
            "The stored original is not the file that was accepted.",
            code="ai.original_changed",
            retry=False,
        ) from None
    return image, blob, data


# Worst case with the default settings: (2 retries + 1) × 60 s timeout + backoff ≈ 182 s.
@task("caption", timeout=300, max_attempts=3, retry_delay=2.0)
async def make_caption(ctx: TaskContext) -> dict[str, Any]:
    resources = ctx.resources
    image_id = ctx.links["image_id"]
    if image_id is None:
        raise TaskError("The image is gone.", code="ai.image_gone", retry=False)
    provider = _provider(resources, str(ctx.payload["provider"]))
    await ctx.progress(10, "reading the image")
    _, blob, data = await _original(resources, image_id)
    cache = AiCache.configured(resources.redis, resources.settings)
    key = cache_key(
        operation="caption",
        image_sha256=blob.sha256,
        provider=provider.name,
        model=provider.caption_model,
    )
    await ctx.progress(30, f"asking {provider.name}")
    cached = await cache.get(key)
    if cached is not None:
        caption = Caption(text=cached.decode(), model=provider.caption_model)
    else:
        try:
            caption = await provider.caption(data)
        except ProviderError as exc:
            raise _task_error(exc) from exc
        await cache.put(key, caption.text.encode())
    await ctx.progress(90, "saving the caption")
    async with resources.db.sessionmaker() as session:
        await session.execute(
            update(Image)
            .where(Image.id == image_id)
            .values(caption=caption.text, caption_model=caption.model)
        )
        await commit(session)
    return {"caption": caption.text, "model": caption.model, "cached": cached is not None}


@task("edit", timeout=300, max_attempts=3, retry_delay=2.0)
async def make_edit(ctx: TaskContext) -> dict[str, Any]:
    resources = ctx.resources
    image_id = ctx.links["image_id"]
    if image_id is None:
        raise TaskError("The image is gone.", code="ai.image_gone", retry=False)
    provider = _provider(resources, str(ctx.payload["provider"]))
    prompt = str(ctx.payload["prompt"])
    reference_id = ctx.payload.get("reference_image_id")
    await ctx.progress(10, "reading the images")
    image, blob, data = await _original(resources, image_id)
    reference: bytes | None = None
    reference_sha = ""
    if reference_id:
        _, reference_blob, reference = await _original(resources, uuid.UUID(str(reference_id)))
        reference_sha = reference_blob.sha256
    # Named after the task: how a rerun recognises the image it already made.
    marker = f"{PurePosixPath(image.original_name).stem[:100]}-edit-{ctx.task_id.hex[:8]}"
    async with resources.db.sessionmaker() as session:
        done = await session.scalar(
            select(Image).where(
                Image.user_id == ctx.user_id,
                Image.parent_id == image.id,
                Image.original_name.like(f"{marker}.%"),
            )
        )
    if done is not None:
        # A rerun after the new image was committed: answer with it.
        return {"image_id": str(done.id), "model": provider.edit_model, "cached": True}

    cache = AiCache.configured(resources.redis, resources.settings)
    key = cache_key(
        operation="edit",
        image_sha256=blob.sha256,
        prompt=prompt,
        reference_sha256=reference_sha,
        provider=provider.name,
        model=provider.edit_model,
    )
    await ctx.progress(25, f"asking {provider.name}")
    edited = await cache.get(key)
    cached = edited is not None
    if edited is None:
        try:
            edited = await provider.edit(data, prompt, reference)
        except ProviderError as exc:
            raise _task_error(exc) from exc
        await cache.put(key, edited)
    await ctx.progress(80, "storing the new image")
    fmt = sniff_format(edited)
    if fmt is None:
        raise TaskError("The provider answered with no usable image.", code="ai.bad_response")
    deps = images.Deps.of(resources)
    async with resources.db.sessionmaker() as session:
        user = await session.get(User, ctx.user_id)
        if user is None:
            raise TaskError("The user is gone.", code="ai.image_gone", retry=False)
        try:
            new_image = await images.ingest(
                session,
                deps,
                user=user,
                data=edited,
                filename=f"{marker}.{'jpg' if fmt == 'jpeg' else fmt}",
                content_type=MIMES[fmt],
                source="edit",
                parent_id=image.id,
            )
        except images.UploadRejected as exc:
            raise TaskError(
                f"The edited image was not valid: {exc.detail}", code="ai.bad_response", retry=False
            ) from None
        await commit(session)
    return {"image_id": str(new_image.id), "model": provider.edit_model, "cached": cached}
