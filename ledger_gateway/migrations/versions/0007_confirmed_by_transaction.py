"""An operation in a mined transaction is CONFIRMED through its transaction row.

Confirming a 256-record transaction rewrote each of its 256 operation rows (~0.8 kB each, its
signed record among them) and moved each one's entry out of the status index. Now the
confirmation is the transaction row's own mark (`mined`, its block and time), and an operation
SUBMITTED in a mined transaction reads as CONFIRMED (`ledger_gateway.store.view_of`). The
status index can no longer hold the open operations (a confirmation leaves the SUBMITTED row as
it is), so it holds the PENDING ones only, in id order (the submitter's next batch); operations
in flight are counted through the transactions still `sent`. Per access (callgrind, the
writer thread, 4,096 accesses stored in calls of 500, 256-record transactions): confirm 19.9k
-> 3.1k instructions and 2,156 -> 668 bytes of WAL; submit 27.2k -> 20.9k instructions (no
SUBMITTED entry added to the index).

Rows stored before keep their meaning: a CONFIRMED operation keeps its own mark (a revert's
settlement still writes one for a record found in another transaction), so nothing is moved.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None

PENDING = sa.text("status = 'pending'")
"""As `ledger_gateway.store.PENDING_CONDITION`."""
OPEN = sa.text("status = 'pending' OR status = 'submitted'")


def upgrade() -> None:
    op.drop_index("ix_gateway_operations_status_id", table_name="gateway_operations")
    op.create_index(
        "ix_gateway_operations_pending",
        "gateway_operations",
        ["id"],
        unique=False,
        sqlite_where=PENDING,
        postgresql_where=PENDING,
    )


def downgrade() -> None:
    # Back to marks on every operation row: those of mined transactions are CONFIRMED again.
    op.execute(
        "UPDATE gateway_operations SET status = 'confirmed', "
        "block_number = (SELECT t.block_number FROM gateway_transactions t "
        "WHERE t.tx_hash = gateway_operations.tx_hash), "
        "confirmed_at = (SELECT t.mined_at FROM gateway_transactions t "
        "WHERE t.tx_hash = gateway_operations.tx_hash) "
        "WHERE status = 'submitted' AND tx_hash IN "
        "(SELECT tx_hash FROM gateway_transactions WHERE status = 'mined')"
    )
    op.drop_index("ix_gateway_operations_pending", table_name="gateway_operations")
    op.create_index(
        "ix_gateway_operations_status_id",
        "gateway_operations",
        ["status", "id"],
        unique=False,
        sqlite_where=OPEN,
        postgresql_where=OPEN,
    )
