"""The derivatives delivery has rendered: where each is stored and what it came from.

A row is written as rendering starts (before the object is stored): it lists every object that
may exist for a source. Rows go with their image or sketch (ON DELETE CASCADE); the objects are
removed by the delete hooks in service.py, which find them here before the source is deleted.
"""

from __future__ import annotations

import uuid

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from backend.core.db import Base, IdMixin, TimestampMixin


class Derivative(IdMixin, TimestampMixin, Base):
    __tablename__ = "delivery_derivatives"

    key: Mapped[str] = mapped_column(String(512), unique=True)
    # For a sketch, the image it was made from: deleting the image finds these too.
    image_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), index=True
    )
    sketch_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("sketches.id", ondelete="CASCADE"), index=True
    )
    content_type: Mapped[str] = mapped_column(String(32))
