"""Images, the stored bytes behind them (shared per user by SHA-256), and pending uploads."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Enum, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from backend.core.db import Base, IdMixin, TimestampMixin


class ImageStatus(enum.StrEnum):
    processing = "processing"
    ready = "ready"
    failed = "failed"


class ImageSource(enum.StrEnum):
    """Where an image came from; stored as its plain string."""

    upload = "upload"
    edit = "edit"
    batch = "batch"


class Blob(IdMixin, TimestampMixin, Base):
    """One user's copy of some bytes: the original object, its metadata and thumbnails.

    Per user, not global: sharing across users would let one user learn that another holds a
    given file (by timing or by dedup side effects)."""

    __tablename__ = "image_blobs"
    __table_args__ = (UniqueConstraint("user_id", "sha256", name="uq_image_blobs_user_id_sha256"),)

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    sha256: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(512))
    content_type: Mapped[str] = mapped_column(String(64))
    format: Mapped[str] = mapped_column(String(16))
    size_bytes: Mapped[int]
    width: Mapped[int]
    height: Mapped[int]
    exif: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # size name → storage key, filled by the thumbnails task.
    thumbnails: Mapped[dict[str, str] | None] = mapped_column(JSON)


class Image(IdMixin, TimestampMixin, Base):
    __tablename__ = "images"
    __table_args__ = (Index("ix_images_user_id_created_at", "user_id", "created_at"),)

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    blob_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("image_blobs.id", ondelete="RESTRICT"), index=True
    )
    original_name: Mapped[str] = mapped_column(String(255))
    status: Mapped[ImageStatus] = mapped_column(
        Enum(ImageStatus, native_enum=False, length=16, validate_strings=True)
    )
    error: Mapped[str | None] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(String(64))
    # Failed uploads keep what was received, for stats; good ones read it from the blob.
    size_bytes: Mapped[int | None]
    source: Mapped[str] = mapped_column(String(16), default="upload")
    parent_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("images.id", ondelete="SET NULL")
    )
    caption: Mapped[str | None] = mapped_column(Text)
    caption_model: Mapped[str | None] = mapped_column(String(64))
    processed_at: Mapped[datetime | None]


class Upload(IdMixin, TimestampMixin, Base):
    """A signed upload slot: the key and rules the browser's direct POST was given."""

    __tablename__ = "uploads"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    storage_key: Mapped[str] = mapped_column(String(512))
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(64))
    max_bytes: Mapped[int]
    expires_at: Mapped[datetime]
    confirmed_at: Mapped[datetime | None]
    image_id: Mapped[uuid.UUID | None]
