from __future__ import annotations

import uuid
from typing import Literal

from fastapi import APIRouter, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field

from backend.ai import service
from backend.ai.cache import AiCache, BadCursor
from backend.ai.deps import ai_providers
from backend.ai.providers.base import ProviderSettings, catalog, default_provider
from backend.auth.deps import AdminUser, CurrentPrincipal, CurrentUser
from backend.auth.models import Role
from backend.core.db import SessionDep
from backend.core.errors import AppError, problem_responses
from backend.core.resources import ResourcesDep
from backend.tasks.deps import task_queue
from backend.tasks.idempotency import IdempotencyDep
from backend.tasks.schemas import TaskOut

router = APIRouter(tags=["ai"], responses=problem_responses(401))
Provider = Literal["gemini", "openai", "local"]


class CaptionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image_id: uuid.UUID
    provider: Provider | None = Field(
        default=None, description="Default: the first configured of gemini, openai, local"
    )


class EditIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image_id: uuid.UUID
    # The real limits (empty, length, control characters) answer with their own codes.
    prompt: str = Field(max_length=100_000)
    reference_image_id: uuid.UUID | None = None
    provider: Provider | None = None


class CapabilitiesOut(BaseModel):
    caption: bool
    edit: bool
    reference_image: bool


class ProviderOut(BaseModel):
    id: str
    name: str
    configured: bool
    default: bool
    capabilities: CapabilitiesOut
    edits: list[str] | None = Field(
        default=None, description="The only edits it understands, for a provider with a fixed set"
    )
    models: dict[str, str]
    hint: str | None = Field(default=None, description="Admins only: how to enable it")


class ProvidersOut(BaseModel):
    providers: list[ProviderOut]


class CacheEntryOut(BaseModel):
    key: str
    kind: str | None
    provider: str | None
    model: str | None
    image_sha256_prefix: str | None
    prompt_hash: str | None
    reference_sha256_prefix: str | None
    size_bytes: int
    memory_bytes: int | None
    age_seconds: float
    ttl_seconds: float
    hits: int


class CacheMemoryOut(BaseModel):
    used_bytes: int
    method: Literal["memory_usage", "value_bytes"]
    redis_used_bytes: int | None


class CacheStatusOut(BaseModel):
    entries: int
    hits: int
    misses: int
    hit_rate: float
    ttl_seconds: int
    max_entries: int
    memory: CacheMemoryOut
    items: list[CacheEntryOut]
    next_cursor: str | None


@router.get("/api/ai/providers", response_model=ProvidersOut, response_model_exclude_none=True)
async def providers(user: CurrentPrincipal, resources: ResourcesDep) -> ProvidersOut:
    """Every provider this server knows, configured or not, and what each can do."""
    configured = ai_providers(resources)
    default = default_provider(configured)
    operator = user.role == Role.admin
    listed = []
    for info in catalog(ProviderSettings.from_settings(resources.settings)):
        ready = info.id in configured
        caps = info.capabilities
        hint = None
        if operator and not ready and info.setting:
            hint = f"Set {info.setting} to enable it."
        listed.append(
            ProviderOut(
                id=info.id,
                name=info.name,
                configured=ready,
                default=info.id == default,
                capabilities=CapabilitiesOut(
                    caption=caps.caption, edit=caps.edit, reference_image=caps.reference_image
                ),
                edits=list(caps.edits) if caps.edits is not None else None,
                models=info.models,
                hint=hint,
            )
        )
    return ProvidersOut(providers=listed)


@router.post(
    "/api/ai/caption",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TaskOut,
    responses=problem_responses(403, 404, 409, 422, 429),
)
async def caption(
    body: CaptionIn,
    user: CurrentUser,
    session: SessionDep,
    resources: ResourcesDep,
    idem: IdempotencyDep,
) -> Response:
    """Caption an image; on success the image gets ``caption`` and ``caption_model``."""
    operator = user.role == Role.admin
    provider = service.choose_provider(body.provider, ai_providers(resources), operator=operator)

    async def produce() -> TaskOut:
        task = await service.create_caption(
            session,
            task_queue(resources),
            resources.redis,
            resources.settings,
            user_id=user.id,
            image_id=body.image_id,
            provider=provider,
            operator=operator,
            others=ai_providers(resources).values(),
        )
        return TaskOut.model_validate(task)

    return await idem.respond(produce, status_code=status.HTTP_202_ACCEPTED)


@router.post(
    "/api/ai/edit",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TaskOut,
    responses=problem_responses(403, 404, 409, 422, 429),
)
async def edit(
    body: EditIn,
    user: CurrentUser,
    session: SessionDep,
    resources: ResourcesDep,
    idem: IdempotencyDep,
) -> Response:
    """Edit an image by prompt; on success a new image (``source: "edit"``, ``parent_id``) holds
    the result and the task's ``result.image_id`` names it.

    An edit the provider cannot make (for ``local``: outside its vocabulary, or with a
    reference image) is refused with 422 ``ai.unsupported_edit`` before any task or quota."""
    operator = user.role == Role.admin
    provider = service.choose_provider(body.provider, ai_providers(resources), operator=operator)

    async def produce() -> TaskOut:
        task = await service.create_edit(
            session,
            task_queue(resources),
            resources.redis,
            resources.settings,
            user_id=user.id,
            image_id=body.image_id,
            prompt=body.prompt,
            reference_image_id=body.reference_image_id,
            provider=provider,
            operator=operator,
            others=ai_providers(resources).values(),
        )
        return TaskOut.model_validate(task)

    return await idem.respond(produce, status_code=status.HTTP_202_ACCEPTED)


@router.get(
    "/api/cache/status", response_model=CacheStatusOut, responses=problem_responses(403, 422)
)
async def cache_status(
    _admin: AdminUser,
    resources: ResourcesDep,
    limit: int = Query(default=50, ge=1, le=500),
    cursor: str | None = Query(default=None, max_length=200),
) -> CacheStatusOut:
    """Counters, memory used, and the entries newest first (``next_cursor`` pages on)."""
    cache = AiCache.configured(resources.redis, resources.settings)
    try:
        page = await cache.entries(limit=limit, cursor=cursor)
    except BadCursor:
        raise AppError(
            "The cursor is not one this endpoint gave out.", code="cache.bad_cursor", status=422
        ) from None
    status_now = await cache.status()
    memory = await cache.memory()
    return CacheStatusOut(
        **status_now.__dict__,
        memory=CacheMemoryOut(**memory.__dict__),
        items=[CacheEntryOut(**entry.__dict__) for entry in page.entries],
        next_cursor=page.next_cursor,
    )
