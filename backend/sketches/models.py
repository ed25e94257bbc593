"""Sketch requests and their results. Status is not stored: it is the result's existence or the
task's state, so the two can never disagree."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from backend.core.db import Base, IdMixin, TimestampMixin


class Sketch(IdMixin, TimestampMixin, Base):
    __tablename__ = "sketches"
    __table_args__ = (Index("ix_sketches_user_id_created_at", "user_id", "created_at"),)

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # Deleting an image takes its sketches with it.
    image_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), index=True
    )
    style: Mapped[str] = mapped_column(String(16))
    method: Mapped[str] = mapped_column(String(16))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    task_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("tasks.id", ondelete="SET NULL"), index=True
    )
    result_key: Mapped[str | None] = mapped_column(String(512))
    content_type: Mapped[str | None] = mapped_column(String(32))
    width: Mapped[int | None]
    height: Mapped[int | None]
    processing_time_ms: Mapped[int | None]
