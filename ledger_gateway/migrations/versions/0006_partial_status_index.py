"""The operations' status index holds only open operations (PENDING or SUBMITTED).

Its readers want open operations only: the PENDING ones in id order (the submitter's next
batch) and the count of open ones (the outbox's bound). Holding every operation ever stored,
each confirmation moved its entry from SUBMITTED to CONFIRMED, an index write per access for an
entry nothing reads; now a confirmation or a failure only takes the entry out, and the index
stays the size of the backlog.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None

INDEX = "ix_gateway_operations_status_id"
OPEN = sa.text("status = 'pending' OR status = 'submitted'")
"""As `ledger_gateway.store.OPEN_CONDITION` (SQLite matches an OR, not an IN list)."""


def upgrade() -> None:
    op.drop_index(INDEX, table_name="gateway_operations")
    op.create_index(
        INDEX,
        "gateway_operations",
        ["status", "id"],
        unique=False,
        sqlite_where=OPEN,
        postgresql_where=OPEN,
    )


def downgrade() -> None:
    op.drop_index(INDEX, table_name="gateway_operations")
    op.create_index(INDEX, "gateway_operations", ["status", "id"], unique=False)
