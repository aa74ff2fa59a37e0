"""break-glass: agreements' review window, emergency accesses and their reviews

`agreement.break_glass_review_hours` is the signed term (0: no break-glass); `break_glass_access`
keeps every access that opened a patient's records without their code (AccessLog
`BreakGlassAccess`: reason, review deadline) and `break_glass_review` a holder steward's review of
one (`BreakGlassReviewed`: upheld or referred to the regulator). Agreements indexed before this
migration allowed no break-glass: the column defaults to 0.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 08:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from audit.uints import Uint

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _positioned(*columns: sa.Column[object]) -> tuple[sa.Column[object], ...]:
    return (
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("tx_index", sa.Integer(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        *columns,
    )


def upgrade() -> None:
    # Plain ADD COLUMN (SQLite takes it with a default): a batch rebuild would have to
    # reflect the custom UNSIGNED BLOB columns of this table.
    op.add_column(
        "agreement",
        sa.Column("break_glass_review_hours", sa.Integer(), nullable=False, server_default="0"),
    )
    op.create_table(
        "break_glass_access",
        *_positioned(
            sa.Column("access_id", sa.String(), nullable=False),
            sa.Column("agreement_id", sa.String(), nullable=False),
            sa.Column("holder_org", sa.String(), nullable=False),
            sa.Column("reason", sa.Integer(), nullable=False),
            sa.Column("review_due", Uint(), nullable=False),
            sa.Column("tx_hash", sa.String(), nullable=False),
        ),
        sa.PrimaryKeyConstraint("block_number", "tx_index", "log_index"),
    )
    for column in ("access_id", "agreement_id", "holder_org"):
        op.create_index(f"ix_break_glass_access_{column}", "break_glass_access", [column])
    op.create_table(
        "break_glass_review",
        *_positioned(
            sa.Column("access_id", sa.String(), nullable=False),
            sa.Column("agreement_id", sa.String(), nullable=False),
            sa.Column("holder_org", sa.String(), nullable=False),
            sa.Column("outcome", sa.Integer(), nullable=False),
            sa.Column("reviewer", sa.String(), nullable=False),
            sa.Column("finding_hash", sa.String(), nullable=False),
            sa.Column("review_due", Uint(), nullable=False),
            sa.Column("tx_hash", sa.String(), nullable=False),
        ),
        sa.PrimaryKeyConstraint("block_number", "tx_index", "log_index"),
    )
    op.create_index("ix_break_glass_review_access_id", "break_glass_review", ["access_id"])


def downgrade() -> None:
    op.drop_index("ix_break_glass_review_access_id", table_name="break_glass_review")
    op.drop_table("break_glass_review")
    for column in ("access_id", "agreement_id", "holder_org"):
        op.drop_index(f"ix_break_glass_access_{column}", table_name="break_glass_access")
    op.drop_table("break_glass_access")
    op.drop_column("agreement", "break_glass_review_hours")
