"""Answering with a stored object: a redirect to a short-lived signed URL on S3, or the bytes
themselves with an ETag when storage is the local folder (API.md: thumbnails and results)."""

from __future__ import annotations

from fastapi import Request, Response, status
from fastapi.responses import RedirectResponse

from backend.core.errors import AppError
from backend.storage.base import ObjectNotFound, Storage


async def object_response(
    request: Request,
    storage: Storage,
    key: str,
    *,
    etag: str,
    content_type: str,
    expires_in: int,
    missing: AppError,
    filename: str | None = None,
) -> Response:
    """``etag`` must change whenever the object does; objects here are immutable per key."""
    if storage.kind != "local":
        url = await storage.presign_get(
            key, expires_in=expires_in, filename=filename, content_type=content_type
        )
        return RedirectResponse(url, status_code=status.HTTP_307_TEMPORARY_REDIRECT)
    quoted = f'"{etag}"'
    headers = {"ETag": quoted, "Cache-Control": "private, max-age=86400"}
    if request.headers.get("if-none-match") == quoted:
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    try:
        data = await storage.get(key)
    except ObjectNotFound:
        raise missing from None
    return Response(data, media_type=content_type, headers=headers)
