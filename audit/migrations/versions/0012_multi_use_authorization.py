"""multi-use authorization codes

`patient_authorization.multi_use` says the code opens every fitting access of its grantee until
it expires (ConsentRegistry `Authorization.multiUse`): it stays ISSUED while accesses redeem it
(one `authorization_redemption` row per use) until revoked or expired. Codes indexed before this
migration were all single-use: the column defaults to false.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 15:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN with a default (SQLite takes it without a table rebuild).
    op.add_column(
        "patient_authorization",
        sa.Column("multi_use", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    op.drop_column("patient_authorization", "multi_use")
