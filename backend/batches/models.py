"""Product CSV batches, one item per input URL, and webhook delivery attempts.

A batch's status and progress come from its task and its counts from its items; neither is
copied onto the batch row, so they cannot disagree.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Enum, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from backend.core.db import Base, IdMixin, TimestampMixin


class ItemStatus(enum.StrEnum):
    pending = "pending"
    succeeded = "succeeded"
    failed = "failed"


class BatchStatus(enum.StrEnum):
    """A batch's status: its task's while it runs; once its task has succeeded, what its items
    say (``partial`` when some URLs failed, ``failed`` when all did)."""

    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    partial = "partial"
    failed = "failed"
    canceled = "canceled"


def settled_status(succeeded: int, failed: int) -> BatchStatus:
    """The status of a batch whose every item has been tried."""
    if failed == 0:
        return BatchStatus.succeeded
    return BatchStatus.failed if succeeded == 0 else BatchStatus.partial


class Batch(IdMixin, TimestampMixin, Base):
    __tablename__ = "batches"
    __table_args__ = (Index("ix_batches_user_id_created_at", "user_id", "created_at"),)

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    filename: Mapped[str] = mapped_column(String(255))
    quality: Mapped[int]
    webhook_url: Mapped[str | None] = mapped_column(String(2048))
    # The parsed input: header and each row's line and original values, for the output CSV.
    header: Mapped[list[str]] = mapped_column(JSON)
    rows: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    task_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("tasks.id", ondelete="SET NULL"), index=True
    )
    total_images: Mapped[int]


class BatchItem(IdMixin, Base):
    __tablename__ = "batch_items"
    __table_args__ = (
        Index("ix_batch_items_batch_id_line_position", "batch_id", "line", "position"),
    )

    batch_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    line: Mapped[int]
    position: Mapped[int]
    url: Mapped[str] = mapped_column(String(2048))
    status: Mapped[ItemStatus] = mapped_column(
        Enum(ItemStatus, native_enum=False, length=16, validate_strings=True),
        default=ItemStatus.pending,
    )
    error: Mapped[str | None] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(String(64))
    image_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("images.id", ondelete="SET NULL"))
    output_key: Mapped[str | None] = mapped_column(String(512))
    output_bytes: Mapped[int | None]
    finished_at: Mapped[datetime | None]


class WebhookDelivery(IdMixin, TimestampMixin, Base):
    __tablename__ = "webhook_deliveries"

    batch_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("batches.id", ondelete="CASCADE"), index=True
    )
    attempt: Mapped[int]
    status_code: Mapped[int | None]
    duration_ms: Mapped[int]
    error: Mapped[str | None] = mapped_column(Text)
    delivered: Mapped[bool]
