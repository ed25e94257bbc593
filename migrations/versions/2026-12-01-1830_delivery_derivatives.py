"""Delivery derivatives: rendered variants of images and sketches and where they are stored.

Revision ID: 7c1d2e3f4a5b
Revises: 215f4ff59a11
Create Date: 2026-12-01 18:30:00.000000+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "7c1d2e3f4a5b"
down_revision: str | None = "215f4ff59a11"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "delivery_derivatives",
        sa.Column("key", sa.String(length=512), nullable=False),
        sa.Column("image_id", sa.Uuid(), nullable=False),
        sa.Column("sketch_id", sa.Uuid(), nullable=True),
        sa.Column("content_type", sa.String(length=32), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["images.id"],
            name=op.f("fk_delivery_derivatives_image_id_images"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["sketch_id"],
            ["sketches.id"],
            name=op.f("fk_delivery_derivatives_sketch_id_sketches"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_derivatives")),
        sa.UniqueConstraint("key", name=op.f("uq_delivery_derivatives_key")),
    )
    with op.batch_alter_table("delivery_derivatives", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_delivery_derivatives_created_at"), ["created_at"])
        batch_op.create_index(batch_op.f("ix_delivery_derivatives_image_id"), ["image_id"])
        batch_op.create_index(batch_op.f("ix_delivery_derivatives_sketch_id"), ["sketch_id"])


def downgrade() -> None:
    with op.batch_alter_table("delivery_derivatives", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_delivery_derivatives_sketch_id"))
        batch_op.drop_index(batch_op.f("ix_delivery_derivatives_image_id"))
        batch_op.drop_index(batch_op.f("ix_delivery_derivatives_created_at"))
    op.drop_table("delivery_derivatives")
