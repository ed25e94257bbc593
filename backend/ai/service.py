"""AI requests: prompt rules, the daily quota, provider choice, and the caption/edit tasks."""

from __future__ import annotations

import unicodedata
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from backend.config import Settings
from backend.core.errors import AppError, TooManyRequests
from backend.images import service as images
from backend.images.models import Image, ImageStatus
from backend.tasks import service as tasks
from backend.tasks.models import Task
from backend.tasks.queue import TaskQueue

CAPTION_KIND = "caption"
EDIT_KIND = "edit"
LOCAL = "local"
GEMINI = "gemini"


class AiError(AppError):
    status = 422


def choose_provider(requested: str | None, available: Mapping[str, object]) -> str:
    if requested is None:
        return GEMINI if GEMINI in available else LOCAL
    if requested not in available:
        raise AiError(
            f"The {requested!r} provider is not available here"
            + ("; set GEMINI_API_KEY to enable Gemini." if requested == GEMINI else "."),
            code="ai.provider_unavailable",
        )
    return requested


def check_prompt(prompt: str, *, max_chars: int) -> str:
    text = prompt.strip()
    if not text:
        raise AiError("The prompt is empty.", code="ai.prompt_empty")
    if len(text) > max_chars:
        raise AiError(
            f"The prompt is longer than {max_chars} characters.", code="ai.prompt_too_long"
        )
    # Control and format characters (bidi overrides, NUL…) hide text from people reading logs
    # and confuse providers; ordinary line breaks and tabs are fine.
    if any(unicodedata.category(ch) in ("Cc", "Cf") and ch not in "\n\t" for ch in text):
        raise AiError("The prompt contains control characters.", code="ai.prompt_invalid")
    return text


async def take_quota(redis: Redis, settings: Settings, *, user_id: uuid.UUID) -> None:
    """Count one AI request against the user's daily quota (UTC days)."""
    now = datetime.now(UTC)
    key = f"atelier:ai-quota:{user_id}:{now:%Y%m%d}"
    used = await redis.incr(key)
    if used == 1:
        await redis.expire(key, 2 * 24 * 3600)
    if used > settings.ai_daily_quota:
        await redis.decr(key)
        midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        raise TooManyRequests(
            f"The daily AI quota of {settings.ai_daily_quota} requests is used up.",
            code="ai.quota_exceeded",
            retry_after=int((midnight - now).total_seconds()) + 1,
        )


async def _usable_image(session: AsyncSession, *, user_id: uuid.UUID, image_id: uuid.UUID) -> Image:
    image = await images.get_image(session, user_id=user_id, image_id=image_id)
    if image.status == ImageStatus.failed or image.blob_id is None:
        raise AppError(
            "This image failed validation and has no pixels to work on.",
            code="ai.image_failed",
            status=409,
        )
    return image


async def create_caption(
    session: AsyncSession,
    queue: TaskQueue,
    redis: Redis,
    settings: Settings,
    *,
    user_id: uuid.UUID,
    image_id: uuid.UUID,
    provider: str,
) -> Task:
    image = await _usable_image(session, user_id=user_id, image_id=image_id)
    await take_quota(redis, settings, user_id=user_id)
    return await tasks.create_task(
        session,
        queue,
        redis,
        user_id=user_id,
        kind=CAPTION_KIND,
        payload={"provider": provider},
        image_id=image.id,
    )


async def create_edit(
    session: AsyncSession,
    queue: TaskQueue,
    redis: Redis,
    settings: Settings,
    *,
    user_id: uuid.UUID,
    image_id: uuid.UUID,
    prompt: str,
    reference_image_id: uuid.UUID | None,
    provider: str,
) -> Task:
    text = check_prompt(prompt, max_chars=settings.ai_prompt_max_chars)
    image = await _usable_image(session, user_id=user_id, image_id=image_id)
    if reference_image_id is not None:
        # Someone else's reference answers 404 like a missing one.
        await _usable_image(session, user_id=user_id, image_id=reference_image_id)
    await take_quota(redis, settings, user_id=user_id)
    return await tasks.create_task(
        session,
        queue,
        redis,
        user_id=user_id,
        kind=EDIT_KIND,
        payload={
            "provider": provider,
            "prompt": text,
            "reference_image_id": str(reference_image_id) if reference_image_id else None,
        },
        image_id=image.id,
    )


async def _auto_caption(session: AsyncSession, deps: images.Deps, image: Image) -> None:
    settings = deps.settings
    if not settings.auto_caption or image.source != "upload":
        return
    # Automatic captions use the configured default provider and do not count against quota.
    provider = GEMINI if settings.gemini_api_key else LOCAL
    await tasks.create_task(
        session,
        deps.queue,
        deps.redis,
        user_id=image.user_id,
        kind=CAPTION_KIND,
        payload={"provider": provider, "auto": True},
        image_id=image.id,
    )


images.register_after_ingest(_auto_caption)
