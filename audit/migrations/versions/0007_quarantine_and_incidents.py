"""quarantined events and acknowledged history rewrites

`quarantined_event`: a log the indexer cannot apply is kept with its position, raw log and
error, and indexing goes on past it (`verify` reports each; the audit service is not ready
while any is there). `reorg` gains what a rollback removed (`vanished`: agreement, access,
consent, artifact and release ids and counts), the ancestor's hash, and who acknowledged the
incident, when and why (`dul audit acknowledge`); `verify` reports every unacknowledged one.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 05:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "quarantined_event",
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("tx_index", sa.Integer(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("block_hash", sa.String(), nullable=False),
        sa.Column("tx_hash", sa.String(), nullable=False),
        sa.Column("address", sa.String(), nullable=False),
        sa.Column("stage", sa.String(), nullable=False),
        sa.Column("error", sa.String(), nullable=False),
        sa.Column("log", _JSON, nullable=False),
        sa.Column("detected_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("block_number", "tx_index", "log_index"),
    )
    with op.batch_alter_table("reorg") as batch:
        batch.add_column(sa.Column("ancestor_hash", sa.String(), nullable=True))
        batch.add_column(sa.Column("vanished", _JSON, nullable=True))
        batch.add_column(sa.Column("acknowledged_at", sa.Float(), nullable=True))
        batch.add_column(sa.Column("acknowledged_by", sa.String(), nullable=True))
        batch.add_column(sa.Column("acknowledged_reason", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("reorg") as batch:
        for column in (
            "acknowledged_reason", "acknowledged_by", "acknowledged_at", "vanished",
            "ancestor_hash",
        ):  # fmt: skip
            batch.drop_column(column)
    op.drop_table("quarantined_event")
