from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from backend.core.pagination import Page
from backend.images.models import ImageSource, ImageStatus


class PresignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    filename: str = Field(min_length=1, max_length=1000)
    content_type: str = Field(min_length=1, max_length=100)
    size_bytes: int = Field(ge=0, description="The file's exact size in bytes")


class PresignOut(BaseModel):
    upload_id: uuid.UUID
    method: Literal["POST"] = "POST"
    url: str
    fields: dict[str, str]
    expires_at: datetime
    max_bytes: int


class ConfirmIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    upload_id: uuid.UUID


class Gps(BaseModel):
    lat: float
    lon: float


class Exif(BaseModel):
    camera_make: str | None = None
    camera_model: str | None = None
    datetime_original: str | None = None
    lens_model: str | None = None
    iso: int | None = None
    focal_length: float | None = None
    exposure_time: str | None = None
    gps: Gps | None = None
    raw: dict[str, Any] = Field(default_factory=dict)


class Thumbnails(BaseModel):
    small: str
    medium: str


class ImageOut(BaseModel):
    id: uuid.UUID
    original_name: str
    status: ImageStatus
    error: str | None
    error_code: str | None
    sha256: str | None
    width: int | None
    height: int | None
    format: str | None
    size_bytes: int | None
    exif: Exif | None
    caption: str | None
    caption_model: str | None
    thumbnails: Thumbnails | None
    delivery: dict[str, str] | None = Field(
        default=None,
        description="Signed URLs (no cookies needed) of the image by size: small, medium, large",
    )
    source: str
    parent_id: uuid.UUID | None
    created_at: datetime
    processed_at: datetime | None


class ImageListQuery(BaseModel):
    """``GET /api/images``' query parameters (read by ``core.querymodel``)."""

    # Shared as the defaults of every request without a query string, so never changed.
    model_config = ConfigDict(frozen=True, extra="ignore")

    limit: int = Field(default=20, ge=1, le=100, description="Page size, 1..100")
    cursor: str | None = Field(default=None, max_length=200, description="Opaque cursor")
    status: ImageStatus | None = None
    source: ImageSource | None = Field(default=None, description="Where images came from")
    q: str | None = Field(
        default=None,
        max_length=200,
        pattern=r"^[^\x00]*$",
        description="Case-insensitive part of the file name; `%` and `_` are plain text",
    )
    created_after: datetime | None = Field(
        default=None, description="Created at or after this time (UTC if no zone)"
    )
    created_before: datetime | None = Field(
        default=None, description="Created before this time (UTC if no zone)"
    )


class ImagePage(Page[ImageOut]):
    total: int = Field(description="How many images match the filters, over all pages")


class Stats(BaseModel):
    total: int
    failed: int
    success_rate: float | None = Field(
        description="ready / (ready + failed); null when nothing finished"
    )
    average_processing_time_seconds: float | None = Field(
        description="mean seconds from upload to ready; null when nothing is ready"
    )
    by_status: dict[str, int]
