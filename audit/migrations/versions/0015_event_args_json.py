"""an event's arguments are stored as JSON text on PostgreSQL too

`event.args` was `jsonb` on PostgreSQL: every indexed event's arguments parsed into the binary
form, ~18 µs of the server's CPU per access event (of ~55) in a catch-up, for a column nothing
queries inside. It becomes `json` (the text as written, checked to be JSON), as SQLite always
stored it; readers get the same values, and the store digest (`audit.checkpoints`) encodes them
canonically, so a checkpoint signed before the migration still verifies after it. SQLite has
nothing to change.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE event ALTER COLUMN args TYPE json USING args::json")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE event ALTER COLUMN args TYPE jsonb USING args::jsonb")
