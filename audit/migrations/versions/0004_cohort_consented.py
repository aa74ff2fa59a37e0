"""cohort.consented: how many admitted subjects had consented, counted at index time

A cohort's provenance node shows how many of its members had a consent for the agreement's
scenario at its holder, recorded and not withdrawn before the access. Counting that on every
query joins every member with the consents (tens of milliseconds for 10,000 subjects); the
indexer counts it once, when it writes the cohort, since everything it depends on lies before
the access in chain order. NULL for cohorts indexed before this revision (and for cohorts that
are not verified); `verify` recounts.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 12:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("cohort") as batch:
        batch.add_column(sa.Column("consented", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("cohort") as batch:
        batch.drop_column("consented")
