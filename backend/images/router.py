from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from fastapi.responses import RedirectResponse
from pydantic_core import to_json
from starlette.datastructures import UploadFile

from backend.auth.deps import CurrentPrincipal, CurrentUser
from backend.auth.models import Role
from backend.core import ratelimit
from backend.core.db import SessionDep
from backend.core.errors import AppError, Forbidden, TooManyRequests, problem_responses
from backend.core.pagination import PageParams
from backend.core.querymodel import parse_query, query_openapi
from backend.core.resources import Resources, ResourcesDep
from backend.images import service
from backend.images.schemas import (
    ConfirmIn,
    ImageListQuery,
    ImageOut,
    ImagePage,
    PresignIn,
    PresignOut,
    Stats,
)
from backend.images.validation import ValidationFailure
from backend.imaging.units import human_bytes
from backend.storage.responses import object_response

router = APIRouter(tags=["images"], responses=problem_responses(401))
# Multipart framing around the file: boundaries, part headers, a few small fields.
MULTIPART_OVERHEAD = 16 * 1024


async def deps(resources: ResourcesDep) -> service.Deps:
    return service.Deps.of(resources)


IngestDeps = Annotated[service.Deps, Depends(deps)]


async def upload_allowance(user: CurrentUser, resources: ResourcesDep) -> None:
    """Per-user upload rate limit, shared by every API instance through Redis."""
    wait = await ratelimit.take(
        resources.redis,
        f"rl:upload:{user.id}",
        limit=resources.settings.upload_rate_per_minute,
        window_seconds=resources.settings.upload_rate_window_seconds,
    )
    if wait is not None:
        raise TooManyRequests(
            "Too many uploads in a short time; try again shortly.",
            code="upload.rate_limited",
            retry_after=wait,
        )


UploadAllowed = Annotated[None, Depends(upload_allowance)]


@router.post(
    "/api/upload/presigned-url",
    status_code=status.HTTP_201_CREATED,
    response_model=PresignOut,
    responses=problem_responses(403, 422, 429),
)
async def presigned_url(
    body: PresignIn,
    user: CurrentUser,
    session: SessionDep,
    ingest: IngestDeps,
    _allowed: UploadAllowed,
) -> PresignOut:
    """Step 1 of the browser flow: a form to POST the file straight to object storage."""
    upload, presigned = await service.create_upload(
        session,
        ingest,
        user=user,
        filename=body.filename,
        content_type=body.content_type,
        size_bytes=body.size_bytes,
    )
    return PresignOut(
        upload_id=upload.id,
        url=presigned.url,
        fields=presigned.fields,
        expires_at=presigned.expires_at,
        max_bytes=upload.max_bytes,
    )


@router.post(
    "/api/upload/confirm",
    status_code=status.HTTP_201_CREATED,
    response_model=ImageOut,
    responses=problem_responses(403, 404, 409, 422),
)
async def confirm(
    body: ConfirmIn, user: CurrentUser, session: SessionDep, ingest: IngestDeps
) -> ImageOut:
    """Step 3: the server reads the object back and validates it. An invalid file is deleted and
    recorded as a failed image; the 422 names it in ``image_id``."""
    image = await service.confirm_upload(session, ingest, user=user, upload_id=body.upload_id)
    return await service.image_out(session, image)


@router.post(
    "/api/images",
    status_code=status.HTTP_201_CREATED,
    response_model=ImageOut,
    responses=problem_responses(403, 411, 413, 422, 429),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {"file": {"type": "string", "format": "binary"}},
                    }
                }
            },
        }
    },
)
async def upload_direct(
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    ingest: IngestDeps,
    _allowed: UploadAllowed,
    content_length: Annotated[int | None, Header()] = None,
) -> ImageOut:
    """Direct upload for server clients and small files: multipart ``file``."""
    limit = ingest.settings.max_upload_bytes
    too_large = ValidationFailure(
        "upload.too_large", f"The file is larger than the {human_bytes(limit)} allowed."
    )
    # The server enforces Content-Length on the body, so checking it bounds what is read;
    # nothing is parsed (or spooled to disk) for a request that is too large.
    if content_length is None:
        raise AppError("Send a Content-Length header.", code="upload.length_required", status=411)
    if content_length > limit + MULTIPART_OVERHEAD:
        # Refused unread, so under no name; still recorded like every refused upload.
        raise await service.refuse(
            session, user=user, filename="", failure=too_large, size=None, status=413
        )
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise AppError(
            "Send the file as multipart/form-data.", code="upload.not_multipart", status=415
        )
    form = await request.form(max_files=1, max_fields=4)
    try:
        file = form.get("file")
        if not isinstance(file, UploadFile):
            raise AppError(
                "The form has no file part named 'file'.", code="upload.missing_file", status=422
            )
        data = await file.read(limit + 1)
        if len(data) > limit:
            raise await service.refuse(
                session,
                user=user,
                filename=file.filename or "",
                failure=too_large,
                size=None,
                status=413,
            )
        declared = (file.content_type or "").split(";")[0].strip().lower()
        name = await service.validate_declared(
            session,
            user=user,
            filename=file.filename or "",
            content_type=declared,
            size_bytes=len(data),
            max_bytes=limit,
        )
        image = await service.ingest(
            session, ingest, user=user, data=data, filename=name, content_type=declared
        )
    finally:
        await form.close()
    return await service.image_out(session, image)


def _utc(value: datetime | None, name: str) -> datetime | None:
    """A query time as aware UTC; one without a zone is taken as UTC."""
    if value is None:
        return None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before year 1 in UTC
        raise AppError(
            f"{name} is out of range.", code="image.invalid_date_range", status=422
        ) from None


def image_filters(query: ImageListQuery) -> service.ImageFilters:
    after = _utc(query.created_after, "created_after")
    before = _utc(query.created_before, "created_before")
    if after is not None and before is not None and after > before:
        raise AppError(
            "created_after is later than created_before.",
            code="image.invalid_date_range",
            status=422,
        )
    return service.ImageFilters(
        status=query.status,
        source=query.source,
        q=(query.q or "").strip() or None,
        created_after=after,
        created_before=before,
    )


@router.get(
    "/api/images",
    response_model=ImagePage,
    responses=problem_responses(422),
    # The parameters are read by one model rather than declared one by one (core.querymodel).
    openapi_extra=query_openapi(ImageListQuery),
)
async def list_images(request: Request, user: CurrentPrincipal) -> Response:
    """Own images, newest first, narrowed by the filters; ``total`` counts every match."""
    query = parse_query(ImageListQuery, request)
    filters = image_filters(query)
    page = PageParams(limit=query.limit, cursor=query.cursor)
    # Read off the app rather than as a dependency: one dependency fewer to solve.
    resources: Resources = request.app.state.resources
    items, cursor, total = await service.list_images(
        resources.db, user_id=user.id, page=page, filters=filters
    )
    # Encoded as built: ImagePage (declared above) documents it; validating 20 images again
    # would cost more than reading them.
    body = b'{"items":[%s],"next_cursor":%s,"total":%d}' % (
        b",".join(items),
        to_json(cursor),
        total,
    )
    return Response(body, media_type="application/json")


@router.get(
    "/api/images/{image_id}", response_model=ImageOut, responses=problem_responses(404, 422)
)
async def get_image(image_id: uuid.UUID, user: CurrentPrincipal, session: SessionDep) -> ImageOut:
    image = await service.get_image(session, user_id=user.id, image_id=image_id)
    return await service.image_out(session, image)


@router.get(
    "/api/images/{image_id}/thumbnails/{size}",
    status_code=status.HTTP_307_TEMPORARY_REDIRECT,
    response_class=Response,
    responses={
        **problem_responses(404, 422),
        200: {"description": "The thumbnail bytes (local storage)", "content": {"image/jpeg": {}}},
        304: {"description": "Not modified"},
    },
)
async def thumbnail(
    image_id: uuid.UUID,
    size: Literal["small", "medium"],
    request: Request,
    user: CurrentPrincipal,
    session: SessionDep,
    resources: ResourcesDep,
) -> Response:
    image = await service.get_image(session, user_id=user.id, image_id=image_id)
    blob = await service.blob_of(session, image)
    key = (blob.thumbnails or {}).get(size) if blob else None
    if blob is None or key is None:
        raise AppError(
            "The thumbnail is not ready yet.", code="image.thumbnail_not_ready", status=404
        )
    return await object_response(
        request,
        resources.storage,
        key,
        etag=f"{blob.sha256[:32]}-{size}",
        content_type="image/jpeg",
        expires_in=resources.settings.download_url_ttl_seconds,
        missing=AppError("The thumbnail is missing.", code="image.thumbnail_not_ready", status=404),
    )


@router.get(
    "/api/images/{image_id}/download",
    status_code=status.HTTP_307_TEMPORARY_REDIRECT,
    response_class=RedirectResponse,
    responses=problem_responses(404, 409, 422),
)
async def download(
    image_id: uuid.UUID, user: CurrentPrincipal, session: SessionDep, resources: ResourcesDep
) -> RedirectResponse:
    image = await service.get_image(session, user_id=user.id, image_id=image_id)
    blob = await service.blob_of(session, image)
    if blob is None:
        raise AppError("A failed upload has no file to download.", code="image.no_file", status=404)
    # The redirect hands the bytes out unseen, so at least their size is checked first (the key
    # is written by the server only; this catches a storage that changed under the record).
    stored = await resources.storage.head(blob.storage_key)
    if stored is None:
        raise AppError("The original is missing.", code="image.original_missing", status=404)
    if stored.size != blob.size_bytes:
        raise AppError(
            "The stored original is not the file that was accepted.",
            code="image.original_changed",
            status=409,
        )
    url = await resources.storage.presign_get(
        blob.storage_key,
        expires_in=resources.settings.download_url_ttl_seconds,
        filename=image.original_name,
        content_type=blob.content_type,
    )
    return RedirectResponse(url, status_code=status.HTTP_307_TEMPORARY_REDIRECT)


@router.delete(
    "/api/images/{image_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(403, 404, 422),
)
async def delete_image(
    image_id: uuid.UUID, user: CurrentUser, session: SessionDep, resources: ResourcesDep
) -> None:
    await service.delete_image(session, resources.storage, user_id=user.id, image_id=image_id)


@router.get("/api/stats", response_model=Stats, responses=problem_responses(403, 422))
async def stats(
    user: CurrentPrincipal,
    session: SessionDep,
    scope: Annotated[Literal["own", "all"], Query(description="`all` is for admins")] = "own",
) -> Stats:
    if scope == "all" and user.role != Role.admin:
        raise Forbidden("Only administrators can see everyone's stats.", code="auth.admin_required")
    return await service.stats(session, user_id=None if scope == "all" else user.id)
