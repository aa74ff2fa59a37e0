"""patient-granted consent: who recorded a consent

`consent.by_subject` says the patient granted the consent with their own key (EIP-712
`ConsentGrant` by the subject's key; `recorder` is that key) rather than a steward of the
holder (ConsentRegistry `ConsentRecorded`'s `bySubject`). Consents indexed before this migration
were all recorded by stewards: the column defaults to false.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 14:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN with a default (SQLite takes it without a table rebuild).
    op.add_column(
        "consent",
        sa.Column("by_subject", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    op.drop_column("consent", "by_subject")
