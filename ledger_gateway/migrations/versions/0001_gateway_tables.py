"""Gateway outbox: operations, signed transactions, nonces.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "gateway_operations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.LargeBinary(), nullable=False),
        sa.Column("kind", sqlmodel.AutoString(length=16), nullable=False),
        sa.Column("org", sa.LargeBinary(), nullable=False),
        sa.Column("agreement_id", sa.LargeBinary(), nullable=False),
        sa.Column("decision", sa.Integer(), nullable=True),
        sa.Column("reasons", sqlmodel.AutoString(length=64), nullable=False),
        sa.Column("status", sqlmodel.AutoString(length=16), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("body_hash", sa.LargeBinary(), nullable=False),
        sa.Column("tx_hash", sa.LargeBinary(), nullable=True),
        sa.Column("block_number", sa.Integer(), nullable=True),
        sa.Column("nonce", sa.Integer(), nullable=True),
        sa.Column("sender", sqlmodel.AutoString(length=42), nullable=True),
        sa.Column("error", sqlmodel.AutoString(length=200), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("confirmed_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_gateway_operations_key", "gateway_operations", ["key"], unique=True)
    op.create_index(
        "ix_gateway_operations_status_id", "gateway_operations", ["status", "id"], unique=False
    )
    op.create_index(
        "ix_gateway_operations_tx_hash", "gateway_operations", ["tx_hash"], unique=False
    )
    op.create_table(
        "gateway_transactions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sender", sqlmodel.AutoString(length=42), nullable=False),
        sa.Column("nonce", sa.Integer(), nullable=False),
        sa.Column("kind", sqlmodel.AutoString(length=16), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("tx_hash", sa.LargeBinary(), nullable=False),
        sa.Column("status", sqlmodel.AutoString(length=16), nullable=False),
        sa.Column("keys", sa.LargeBinary(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("block_number", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sender", "nonce", name="uq_gateway_transactions_nonce"),
    )
    op.create_index(
        "ix_gateway_transactions_tx_hash", "gateway_transactions", ["tx_hash"], unique=True
    )
    op.create_index(
        "ix_gateway_transactions_status", "gateway_transactions", ["status"], unique=False
    )
    op.create_table(
        "gateway_nonces",
        sa.Column("sender", sqlmodel.AutoString(length=42), nullable=False),
        sa.Column("next_nonce", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("sender"),
    )


def downgrade() -> None:
    op.drop_table("gateway_nonces")
    op.drop_index("ix_gateway_transactions_status", table_name="gateway_transactions")
    op.drop_index("ix_gateway_transactions_tx_hash", table_name="gateway_transactions")
    op.drop_table("gateway_transactions")
    op.drop_index("ix_gateway_operations_tx_hash", table_name="gateway_operations")
    op.drop_index("ix_gateway_operations_status_id", table_name="gateway_operations")
    op.drop_index("ix_gateway_operations_key", table_name="gateway_operations")
    op.drop_table("gateway_operations")
