from __future__ import annotations

import uuid
from typing import Literal

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, ConfigDict, Field

from backend.ai import service
from backend.ai.cache import AiCache
from backend.ai.deps import ai_providers
from backend.auth.deps import AdminUser, CurrentUser
from backend.core.db import SessionDep
from backend.core.errors import problem_responses
from backend.core.resources import ResourcesDep
from backend.tasks.deps import task_queue
from backend.tasks.idempotency import IdempotencyDep
from backend.tasks.schemas import TaskOut

router = APIRouter(tags=["ai"], responses=problem_responses(401))
Provider = Literal["gemini", "local"]


class CaptionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image_id: uuid.UUID
    provider: Provider | None = Field(default=None, description="Default: gemini when configured")


class EditIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image_id: uuid.UUID
    # The real limits (empty, length, control characters) answer with their own codes.
    prompt: str = Field(max_length=100_000)
    reference_image_id: uuid.UUID | None = None
    provider: Provider | None = None


class CacheStatusOut(BaseModel):
    entries: int
    hits: int
    misses: int
    hit_rate: float
    ttl_seconds: int
    max_entries: int


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
    provider = service.choose_provider(body.provider, ai_providers(resources))

    async def produce() -> TaskOut:
        task = await service.create_caption(
            session,
            task_queue(resources),
            resources.redis,
            resources.settings,
            user_id=user.id,
            image_id=body.image_id,
            provider=provider,
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
    the result and the task's ``result.image_id`` names it."""
    provider = service.choose_provider(body.provider, ai_providers(resources))

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
        )
        return TaskOut.model_validate(task)

    return await idem.respond(produce, status_code=status.HTTP_202_ACCEPTED)


@router.get("/api/cache/status", response_model=CacheStatusOut, responses=problem_responses(403))
async def cache_status(_admin: AdminUser, resources: ResourcesDep) -> CacheStatusOut:
    status_now = await AiCache.configured(resources.redis, resources.settings).status()
    return CacheStatusOut(**status_now.__dict__)
