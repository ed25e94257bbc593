"""AI requests: prompt rules, the daily quota, provider choice, and the caption/edit tasks."""

from __future__ import annotations

import unicodedata
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from backend.ai.providers.base import (
    UNSUPPORTED_EDIT,
    Provider,
    ProviderError,
    ProviderSettings,
    catalog,
    default_provider,
)
from backend.config import Settings
from backend.core.errors import AppError, TooManyRequests
from backend.images import service as images
from backend.images.models import Image, ImageStatus
from backend.tasks import service as tasks
from backend.tasks.models import Task
from backend.tasks.queue import TaskQueue

CAPTION_KIND = "caption"
EDIT_KIND = "edit"


class AiError(AppError):
    status = 422


def _setting_for(name: str) -> str | None:
    return next((info.setting for info in catalog(ProviderSettings()) if info.id == name), None)


def _remote_settings() -> str:
    names = [info.setting for info in catalog(ProviderSettings()) if info.setting]
    return " or ".join(names)


def choose_provider(
    requested: str | None, available: Mapping[str, Provider], *, operator: bool = False
) -> Provider:
    """The provider a request names, or the default; ai.provider_unavailable when not set up.

    ``operator`` (an admin asking) adds which setting enables it: end users cannot act on that.
    """
    name = requested or default_provider(available)
    provider = available.get(name)
    if provider is None:
        detail = f"The {name!r} provider is not configured on this server."
        setting = _setting_for(name)
        extra: dict[str, Any] = (
            {"hint": f"Set {setting} to enable it."} if operator and setting else {}
        )
        raise AiError(detail, code="ai.provider_unavailable", provider=name, **extra)
    return provider


def check_supported(
    provider: Provider,
    *,
    operation: str,
    prompt: str = "",
    with_reference: bool = False,
    operator: bool = False,
    others: Iterable[Provider] = (),
) -> None:
    """Refuse, before a task exists or quota is taken, what the provider certainly cannot do.

    The problem names the configured ``others`` that could (``alternatives``); when there are
    none, an admin is told which settings would add one.
    """
    try:
        _check(provider, operation, prompt, with_reference)
    except ProviderError as exc:
        extra: dict[str, Any] = {"provider": provider.name}
        if provider.capabilities.edits is not None:
            extra["edits"] = list(provider.capabilities.edits)
        alternatives = [
            other.name
            for other in others
            if other.name != provider.name and _can(other, operation, prompt, with_reference)
        ]
        if alternatives:
            extra["alternatives"] = alternatives
        elif operator:
            extra["hint"] = f"Set {_remote_settings()} to enable a provider that can do this."
        raise AiError(str(exc), code=UNSUPPORTED_EDIT, **extra) from None


def _check(provider: Provider, operation: str, prompt: str, with_reference: bool) -> None:
    if operation == CAPTION_KIND and not provider.capabilities.caption:
        raise ProviderError(
            f"The {provider.name} provider makes no captions.", code=UNSUPPORTED_EDIT
        )
    if operation == EDIT_KIND:
        if not provider.capabilities.edit:
            raise ProviderError(
                f"The {provider.name} provider makes no edits.", code=UNSUPPORTED_EDIT
            )
        provider.check_edit(prompt, with_reference=with_reference)


def _can(provider: Provider, operation: str, prompt: str, with_reference: bool) -> bool:
    try:
        _check(provider, operation, prompt, with_reference)
    except ProviderError:
        return False
    return True


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
    provider: Provider,
    operator: bool = False,
    others: Iterable[Provider] = (),
) -> Task:
    image = await _usable_image(session, user_id=user_id, image_id=image_id)
    check_supported(provider, operation=CAPTION_KIND, operator=operator, others=others)
    await take_quota(redis, settings, user_id=user_id)
    return await tasks.create_task(
        session,
        queue,
        redis,
        user_id=user_id,
        kind=CAPTION_KIND,
        payload={"provider": provider.name},
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
    provider: Provider,
    operator: bool = False,
    others: Iterable[Provider] = (),
) -> Task:
    text = check_prompt(prompt, max_chars=settings.ai_prompt_max_chars)
    image = await _usable_image(session, user_id=user_id, image_id=image_id)
    if reference_image_id is not None:
        # Someone else's reference answers 404 like a missing one.
        await _usable_image(session, user_id=user_id, image_id=reference_image_id)
    check_supported(
        provider,
        operation=EDIT_KIND,
        prompt=text,
        with_reference=reference_image_id is not None,
        operator=operator,
        others=others,
    )
    await take_quota(redis, settings, user_id=user_id)
    return await tasks.create_task(
        session,
        queue,
        redis,
        user_id=user_id,
        kind=EDIT_KIND,
        payload={
            "provider": provider.name,
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
    keys = {"gemini": settings.gemini_api_key, "openai": settings.openai_api_key}
    provider = default_provider(name for name, key in keys.items() if key)
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
