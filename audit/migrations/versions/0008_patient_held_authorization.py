"""patient-held authorization: who issued and revoked a code, and subjects' keys

`patient_authorization.issued_by_subject` and `authorization_revocation.by_subject` say the
patient signed (EIP-712 `Authorization` / `AuthorizationRevocation` by the subject's key) rather
than a steward; `subject_key` keeps every key a steward registered, rotated or removed for a
subject (ConsentRegistry `SubjectKeyRegistered`). Rows indexed before this migration were all
steward-issued: the new columns default to false.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 06:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN (SQLite takes it with a default): a batch rebuild would have to
    # reflect the custom UNSIGNED BLOB columns of these tables.
    op.add_column(
        "patient_authorization",
        sa.Column("issued_by_subject", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column(
        "authorization_revocation",
        sa.Column("by_subject", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_table(
        "subject_key",
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("tx_index", sa.Integer(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("holder_org", sa.String(), nullable=False),
        sa.Column("subject", sa.String(), nullable=False),
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("previous", sa.String(), nullable=False),
        sa.Column("by_account", sa.String(), nullable=False),
        sa.Column("tx_hash", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("block_number", "tx_index", "log_index"),
    )
    op.create_index("ix_subject_key_subject", "subject_key", ["subject"])


def downgrade() -> None:
    op.drop_index("ix_subject_key_subject", table_name="subject_key")
    op.drop_table("subject_key")
    op.drop_column("authorization_revocation", "by_subject")
    op.drop_column("patient_authorization", "issued_by_subject")
