"""Cohort leaves beside accesses; the authorization fault of redemptions.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "cohort_leaves",
        sa.Column("access_id", sa.LargeBinary(32), nullable=False),
        sa.Column("root", sa.LargeBinary(32), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("leaves", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("access_id"),
    )
    with op.batch_alter_table("gateway_operations") as batch:
        batch.add_column(sa.Column("authorization_fault", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("gateway_operations") as batch:
        batch.drop_column("authorization_fault")
    op.drop_table("cohort_leaves")
