"""The operations' transaction-hash index holds only operations in a transaction.

A PENDING operation has no transaction hash: every one stored put a NULL entry in the index and
every submission took it out again, a fourth B-tree insert per stored access and a second
index write per submitted one, for entries no query reads (every query on the column looks up
a hash, which implies it is not NULL, so the partial index still serves them).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

INDEX = "ix_gateway_operations_tx_hash"
IN_A_TRANSACTION = sa.text("tx_hash IS NOT NULL")


def upgrade() -> None:
    op.drop_index(INDEX, table_name="gateway_operations")
    op.create_index(
        INDEX,
        "gateway_operations",
        ["tx_hash"],
        unique=False,
        sqlite_where=IN_A_TRANSACTION,
        postgresql_where=IN_A_TRANSACTION,
    )


def downgrade() -> None:
    op.drop_index(INDEX, table_name="gateway_operations")
    op.create_index(INDEX, "gateway_operations", ["tx_hash"], unique=False)
