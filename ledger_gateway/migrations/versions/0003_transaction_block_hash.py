"""The block hash and time a transaction was mined in, so the submitter can re-check that
confirmations it reported are still on the chain.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("gateway_transactions") as batch:
        batch.add_column(sa.Column("block_hash", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("mined_at", sa.Float(), nullable=True))
    op.create_index(
        "ix_gateway_transactions_mined_at", "gateway_transactions", ["mined_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_gateway_transactions_mined_at", table_name="gateway_transactions")
    with op.batch_alter_table("gateway_transactions") as batch:
        batch.drop_column("mined_at")
        batch.drop_column("block_hash")
