from __future__ import annotations

import uuid
from pathlib import PurePosixPath
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from backend.auth.deps import CurrentPrincipal, CurrentUser
from backend.core.db import SessionDep
from backend.core.errors import AppError, NotFound, problem_responses
from backend.core.pagination import Page, PageDep
from backend.core.pixels import run_pixels
from backend.core.resources import ResourcesDep
from backend.sketches import service
from backend.sketches.gallery import preview
from backend.sketches.schemas import Available, Created, CreateIn, MethodOut, SketchOut, StyleOut
from backend.sketches.styles import METHODS, STYLES
from backend.storage.responses import object_response
from backend.tasks import service as tasks
from backend.tasks.deps import task_queue
from backend.tasks.idempotency import IdempotencyDep
from backend.tasks.models import Task
from backend.tasks.schemas import TaskOut

router = APIRouter(prefix="/api/sketch", tags=["sketches"])


@router.get("/styles/available", response_model=Available)
async def available() -> Available:
    return Available(
        styles=[
            StyleOut(
                id=s.id,
                name=s.name,
                description=s.description,
                grayscale=s.grayscale,
                preview_url=f"/api/sketch/styles/{s.id}/preview",
            )
            for s in STYLES.values()
        ],
        methods=[
            MethodOut(id=m.id, name=m.name, description=m.description) for m in METHODS.values()
        ],
    )


@router.get(
    "/styles/{style}/preview",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, **problem_responses(404)},
)
async def style_preview(style: str) -> Response:
    """A small sample of the style, rendered once from a bundled photograph and then cached."""
    if style not in STYLES:
        raise NotFound("No such style.", code="sketch.unknown_style")
    data = await run_pixels(preview, style)
    return Response(
        data, media_type="image/png", headers={"Cache-Control": "public, max-age=86400"}
    )


@router.post(
    "/create",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Created,
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def create(
    body: CreateIn,
    user: CurrentUser,
    session: SessionDep,
    resources: ResourcesDep,
    idem: IdempotencyDep,
) -> Response:
    async def produce() -> Created:
        sketch, task = await service.create_sketch(
            session, task_queue(resources), resources.redis, user_id=user.id, body=body
        )
        return Created(sketch=service.to_out(sketch, task), task=TaskOut.model_validate(task))

    return await idem.respond(produce, status_code=status.HTTP_202_ACCEPTED)


@router.get("/", response_model=Page[SketchOut], responses=problem_responses(401, 422))
async def list_sketches(
    user: CurrentPrincipal,
    session: SessionDep,
    page: PageDep,
    image_id: Annotated[
        uuid.UUID | None, Query(description="Only the sketches of this image")
    ] = None,
) -> Page[SketchOut]:
    items, cursor = await service.list_sketches(
        session, user_id=user.id, page=page, image_id=image_id
    )
    return Page(items=items, next_cursor=cursor)


@router.get("/task/{task_id}", response_model=TaskOut, responses=problem_responses(401, 404, 422))
async def sketch_task(task_id: uuid.UUID, user: CurrentPrincipal, session: SessionDep) -> Task:
    return await tasks.get_task(session, user_id=user.id, task_id=task_id)


@router.get("/{sketch_id}", response_model=SketchOut, responses=problem_responses(401, 404, 422))
async def get_sketch(
    sketch_id: uuid.UUID, user: CurrentPrincipal, session: SessionDep
) -> SketchOut:
    sketch = await service.get_sketch(session, user_id=user.id, sketch_id=sketch_id)
    return await service.sketch_out(session, sketch)


@router.get(
    "/{sketch_id}/result",
    status_code=status.HTTP_307_TEMPORARY_REDIRECT,
    response_class=Response,
    responses={
        **problem_responses(401, 404, 422),
        200: {"description": "The bytes (local storage)"},
    },
)
async def result(
    sketch_id: uuid.UUID,
    request: Request,
    user: CurrentPrincipal,
    session: SessionDep,
    resources: ResourcesDep,
) -> Response:
    sketch = await service.get_sketch(session, user_id=user.id, sketch_id=sketch_id)
    if sketch.result_key is None:
        raise AppError("The sketch is not ready.", code="sketch.not_ready", status=404)
    return await object_response(
        request,
        resources.storage,
        sketch.result_key,
        etag=sketch.id.hex,
        content_type=sketch.content_type or "application/octet-stream",
        expires_in=resources.settings.download_url_ttl_seconds,
        missing=AppError("The sketch result is missing.", code="sketch.not_ready", status=404),
        # The stored key carries the format the task actually wrote.
        filename=f"sketch-{sketch.style}-{sketch.method}{PurePosixPath(sketch.result_key).suffix}",
    )


@router.delete(
    "/{sketch_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(401, 403, 404, 422),
)
async def delete_sketch(
    sketch_id: uuid.UUID, user: CurrentUser, session: SessionDep, resources: ResourcesDep
) -> None:
    await service.delete_sketch(
        session, resources.storage, resources.redis, user_id=user.id, sketch_id=sketch_id
    )
