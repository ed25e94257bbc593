from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, Response, UploadFile, status
from pydantic import BaseModel

from backend.auth.deps import CurrentPrincipal, CurrentUser
from backend.batches import service
from backend.batches.models import BatchItem, BatchStatus, ItemStatus
from backend.core.db import SessionDep
from backend.core.errors import AppError, problem_responses
from backend.core.pagination import Page, PageDep
from backend.core.resources import ResourcesDep
from backend.storage.responses import object_response
from backend.tasks.deps import task_queue
from backend.tasks.idempotency import IdempotencyDep
from backend.tasks.schemas import TaskOut

router = APIRouter(tags=["batches"], responses=problem_responses(401))


class BatchOut(BaseModel):
    id: uuid.UUID
    filename: str
    status: BatchStatus
    progress: int
    quality: int
    webhook_url: str | None
    total_images: int
    processed_images: int
    failed_images: int
    task_id: uuid.UUID | None
    created_at: datetime
    finished_at: datetime | None


class BatchCreated(BaseModel):
    batch: BatchOut
    task: TaskOut


class ItemOut(BaseModel):
    id: uuid.UUID
    line: int
    position: int
    url: str
    status: ItemStatus
    error: str | None
    error_code: str | None
    image_id: uuid.UUID | None
    output_url: str | None
    thumbnail_url: str | None
    output_bytes: int | None


class Items(BaseModel):
    items: list[ItemOut]


class WebhookSecret(BaseModel):
    secret: str
    header: str = "X-Atelier-Signature"
    scheme: str = "t=<unix seconds>,v1=<hex HMAC-SHA256 of '<t>.<body>'>"


@router.post(
    "/api/batches",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BatchCreated,
    responses=problem_responses(403, 413, 422),
)
async def create_batch(
    user: CurrentUser,
    session: SessionDep,
    resources: ResourcesDep,
    idem: IdempotencyDep,
    file: Annotated[UploadFile, File(description="The product CSV")],
    webhook_url: Annotated[str | None, Form(max_length=2048)] = None,
    quality: Annotated[int, Form(ge=1, le=95)] = 50,
) -> Response:
    """Import a product CSV (`S. No.`, `Product Name`, `Input Image Urls`); a malformed file
    answers 422 with every bad row and its line number in `errors`."""
    settings = resources.settings
    data = await file.read(settings.batch_max_csv_bytes + 1)
    if len(data) > settings.batch_max_csv_bytes:
        raise AppError("The CSV file is too large.", code="batch.csv_too_large", status=413)

    async def produce() -> BatchCreated:
        batch, task = await service.create_batch(
            session,
            task_queue(resources),
            resources.redis,
            settings,
            user_id=user.id,
            filename=file.filename or "batch.csv",
            data=data,
            quality=quality,
            webhook_url=webhook_url,
        )
        return BatchCreated(
            batch=BatchOut(**service.batch_json(batch, task)), task=TaskOut.model_validate(task)
        )

    return await idem.respond(produce, status_code=status.HTTP_202_ACCEPTED)


@router.get("/api/batches", response_model=Page[BatchOut], responses=problem_responses(422))
async def list_batches(
    user: CurrentPrincipal, session: SessionDep, page: PageDep
) -> Page[BatchOut]:
    items, cursor = await service.list_batches(session, user_id=user.id, page=page)
    return Page(items=[BatchOut(**item) for item in items], next_cursor=cursor)


@router.get(
    "/api/batches/{batch_id}", response_model=BatchOut, responses=problem_responses(404, 422)
)
async def get_batch(batch_id: uuid.UUID, user: CurrentPrincipal, session: SessionDep) -> BatchOut:
    # What a client polls while its batch runs: the caller from the session cache, not a
    # user row read per poll.
    return BatchOut(**await service.batch_view(session, user_id=user.id, batch_id=batch_id))


@router.delete(
    "/api/batches/{batch_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problem_responses(403, 404, 409, 422),
)
async def delete_batch(
    batch_id: uuid.UUID, user: CurrentUser, session: SessionDep, resources: ResourcesDep
) -> Response:
    """Delete a finished batch with its items and compressed outputs; the images it imported
    stay. 409 `batch.in_progress` while its task is queued or running (cancel it first)."""
    await service.delete_batch(
        session, storage=resources.storage, user_id=user.id, batch_id=batch_id
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/api/batches/{batch_id}/items", response_model=Items, responses=problem_responses(404, 422)
)
async def batch_items(
    batch_id: uuid.UUID, user: CurrentPrincipal, session: SessionDep, resources: ResourcesDep
) -> Items:
    batch = await service.get_batch(session, user_id=user.id, batch_id=batch_id)
    return Items(
        items=[
            ItemOut(
                id=item.id,
                line=item.line,
                position=item.position,
                url=item.url,
                status=item.status,
                error=item.error,
                error_code=item.error_code,
                image_id=item.image_id,
                output_url=service.output_url(resources.settings, item, quality=batch.quality)
                if item.status == ItemStatus.succeeded
                else None,
                thumbnail_url=service.thumbnail_url(resources.settings, item),
                output_bytes=item.output_bytes,
            )
            for item in await service.items_of(session, batch)
        ]
    )


@router.get(
    "/api/batches/{batch_id}/output.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}, **problem_responses(404, 422)},
)
async def output_csv(
    batch_id: uuid.UUID, user: CurrentPrincipal, session: SessionDep, resources: ResourcesDep
) -> Response:
    batch = await service.get_batch(session, user_id=user.id, batch_id=batch_id)
    data = service.output_csv(batch, await service.items_of(session, batch), resources.settings)
    stem = batch.filename.rsplit(".", 1)[0] or "batch"
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in stem)[:80]
    return Response(
        data,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{safe}-output.csv"'},
    )


@router.get(
    "/api/batches/{batch_id}/items/{item_id}/output",
    status_code=status.HTTP_307_TEMPORARY_REDIRECT,
    response_class=Response,
    responses={**problem_responses(404, 422), 200: {"description": "The JPEG (local storage)"}},
)
async def item_output(
    batch_id: uuid.UUID,
    item_id: uuid.UUID,
    request: Request,
    user: CurrentPrincipal,
    session: SessionDep,
    resources: ResourcesDep,
) -> Response:
    batch = await service.get_batch(session, user_id=user.id, batch_id=batch_id)
    item = await session.get(BatchItem, item_id)
    missing = AppError("No output for this item.", code="batch.no_output", status=404)
    if item is None or item.batch_id != batch.id or item.output_key is None:
        raise missing
    return await object_response(
        request,
        resources.storage,
        item.output_key,
        etag=item.id.hex,
        content_type="image/jpeg",
        expires_in=resources.settings.download_url_ttl_seconds,
        missing=missing,
    )


@router.get("/api/auth/webhook-secret", response_model=WebhookSecret, tags=["auth"])
async def get_webhook_secret(user: CurrentUser, session: SessionDep) -> WebhookSecret:
    """The secret that signs this user's batch webhooks (made on first request)."""
    return WebhookSecret(secret=await service.webhook_secret(session, user=user))
