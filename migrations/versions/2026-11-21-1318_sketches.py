"""Sketch requests and their stored results.

Revision ID: 5858671f0826
Revises: f195e0478841
Create Date: 2026-11-21 13:18:59.069721+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '5858671f0826'
down_revision: str | None = 'f195e0478841'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('sketches',
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('image_id', sa.Uuid(), nullable=False),
    sa.Column('style', sa.String(length=16), nullable=False),
    sa.Column('method', sa.String(length=16), nullable=False),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('task_id', sa.Uuid(), nullable=True),
    sa.Column('result_key', sa.String(length=512), nullable=True),
    sa.Column('content_type', sa.String(length=32), nullable=True),
    sa.Column('width', sa.Integer(), nullable=True),
    sa.Column('height', sa.Integer(), nullable=True),
    sa.Column('processing_time_ms', sa.Integer(), nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['image_id'], ['images.id'], name=op.f('fk_sketches_image_id_images'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], name=op.f('fk_sketches_task_id_tasks'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_sketches_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sketches'))
    )
    with op.batch_alter_table('sketches', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sketches_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_sketches_image_id'), ['image_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_sketches_task_id'), ['task_id'], unique=False)
        batch_op.create_index('ix_sketches_user_id_created_at', ['user_id', 'created_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('sketches', schema=None) as batch_op:
        batch_op.drop_index('ix_sketches_user_id_created_at')
        batch_op.drop_index(batch_op.f('ix_sketches_task_id'))
        batch_op.drop_index(batch_op.f('ix_sketches_image_id'))
        batch_op.drop_index(batch_op.f('ix_sketches_created_at'))

    op.drop_table('sketches')
