"""specific consent: the studies, requesting organizations and disease term a consent names

`consent.studies` and `consent.requesters` hold the agreement ids / organization ids a
specific consent is limited to, as space-separated lowercase 0x hex in ascending order (empty:
any), and `consent.disease_code` the 0x hex bytes32 of its disease term (zeros: none). Plain
strings rather than JSON, so the consented-members count matches them with the same SQL on
SQLite and PostgreSQL. Consents indexed before this migration were all unrestricted: the
defaults say so.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 08:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ZERO32 = "0x" + "00" * 32


def upgrade() -> None:
    # Plain ADD COLUMN with a default (SQLite takes it without a table rebuild).
    op.add_column(
        "consent", sa.Column("disease_code", sa.String(), nullable=False, server_default=ZERO32)
    )
    op.add_column("consent", sa.Column("studies", sa.String(), nullable=False, server_default=""))
    op.add_column(
        "consent", sa.Column("requesters", sa.String(), nullable=False, server_default="")
    )


def downgrade() -> None:
    op.drop_column("consent", "requesters")
    op.drop_column("consent", "studies")
    op.drop_column("consent", "disease_code")
