"""artifacts: what was made from released results (ArtifactRegistry)

`artifact` (one row per ArtifactRegistered), `artifact_release_parent` (the releases it was
derived from: access, agreement, result hash) and `artifact_parent` (the artifacts it was derived
from), each with the registration's block for rollbacks.

A store migrated here from 0004 holds no artifact rows yet and its checkpoint does not list
ArtifactRegistry: the indexer then reads the registry's events from its deployment block up to
the checkpoint and adds them in one transaction before going on (`Indexer._add_contracts`); no
re-index is needed.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 12:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "artifact",
        sa.Column("artifact_id", sa.String(), nullable=False),
        sa.Column("owner_org", sa.String(), nullable=False),
        sa.Column("kind", sa.Integer(), nullable=False),
        sa.Column("metadata_hash", sa.String(), nullable=False),
        sa.Column("registrant", sa.String(), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("tx_index", sa.Integer(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("tx_hash", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("artifact_id"),
    )
    op.create_index("ix_artifact_owner_org", "artifact", ["owner_org"])
    op.create_index("ix_artifact_block_number", "artifact", ["block_number"])

    op.create_table(
        "artifact_release_parent",
        sa.Column("artifact_id", sa.String(), nullable=False),
        sa.Column("access_id", sa.String(), nullable=False),
        sa.Column("result_hash", sa.String(), nullable=False),
        sa.Column("agreement_id", sa.String(), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("artifact_id", "access_id", "result_hash"),
    )
    for column in ("access_id", "result_hash", "agreement_id", "block_number"):
        op.create_index(f"ix_artifact_release_parent_{column}", "artifact_release_parent", [column])

    op.create_table(
        "artifact_parent",
        sa.Column("artifact_id", sa.String(), nullable=False),
        sa.Column("parent_id", sa.String(), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("artifact_id", "parent_id"),
    )
    op.create_index("ix_artifact_parent_parent_id", "artifact_parent", ["parent_id"])
    op.create_index("ix_artifact_parent_block_number", "artifact_parent", ["block_number"])


def downgrade() -> None:
    op.drop_table("artifact_parent")
    op.drop_table("artifact_release_parent")
    op.drop_table("artifact")
