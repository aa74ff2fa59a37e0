"""access_event: look-ups by agreement, dataset and requester in chain order

The provenance queries ask for "the first N accesses of this agreement (dataset, requester) in
chain order". With an index on the id column alone the database reads and sorts every access
of that id (a million for a busy agreement); with the position appended to the index it reads
N entries. Each composite index replaces the single-column index it extends (same prefix, so
the indexer pays for no extra index on insert).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_POSITION = ["block_number", "tx_index", "log_index"]
_COLUMNS = ("agreement_id", "dataset_id", "requester")


def upgrade() -> None:
    for column in _COLUMNS:
        op.create_index(f"ix_access_event_{column}_position", "access_event", [column, *_POSITION])
        op.drop_index(f"ix_access_event_{column}", table_name="access_event")


def downgrade() -> None:
    for column in _COLUMNS:
        op.create_index(f"ix_access_event_{column}", "access_event", [column])
        op.drop_index(f"ix_access_event_{column}_position", table_name="access_event")
