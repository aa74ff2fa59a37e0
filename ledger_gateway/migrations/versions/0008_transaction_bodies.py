"""A signed transaction's bytes and operation keys in their own table, apart from its marks.

The row of `gateway_transactions` is marked when the transaction is mined, re-sent, reverted
or reopened; with the signed bytes (~140 kB for 256 records) and the keys (8 kB) in it, SQLite
rewrote both with every mark (the record's length changes, so every overflow page moves): a
confirmation wrote ~37 pages of WAL to change four columns, 668 bytes per access (9 now;
4,096 accesses in 256-record transactions, the WAL's size after each phase). The bytes are
written once, with the transaction, in `gateway_transaction_bodies` (same id), and read only
to send it again.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "gateway_transaction_bodies",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("keys", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.execute(
        "INSERT INTO gateway_transaction_bodies (id, raw, keys) "
        "SELECT id, raw, keys FROM gateway_transactions"
    )
    with op.batch_alter_table("gateway_transactions") as batch:
        batch.drop_column("keys")
        batch.drop_column("raw")


def downgrade() -> None:
    with op.batch_alter_table("gateway_transactions") as batch:
        batch.add_column(sa.Column("raw", sa.LargeBinary(), nullable=False, server_default=""))
        batch.add_column(sa.Column("keys", sa.LargeBinary(), nullable=False, server_default=""))
    body = "FROM gateway_transaction_bodies b WHERE b.id = gateway_transactions.id"
    op.execute(
        f"UPDATE gateway_transactions SET raw = (SELECT b.raw {body}), "  # noqa: S608 - constants
        f"keys = (SELECT b.keys {body})"
    )
    op.drop_table("gateway_transaction_bodies")
