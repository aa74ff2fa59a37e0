"""Durable reservations: each agreement's counted quota use and one reservation per
authorization code, written in the transaction that stores a grant, so several worker
processes can share one outbox. Codes held by grants not yet on chain are carried over.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

GRANTED = 1
REF_OFFSET = 12 * 32
"""The authorization reference is word 12 of an encoded access record."""


def upgrade() -> None:
    op.create_table(
        "gateway_quota_use",
        sa.Column("agreement_id", sa.LargeBinary(32), nullable=False),
        sa.Column("used", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("agreement_id"),
    )
    codes = op.create_table(
        "gateway_code_reservations",
        sa.Column("code", sa.LargeBinary(32), nullable=False),
        sa.Column("access_id", sa.LargeBinary(32), nullable=False),
        sa.PrimaryKeyConstraint("code"),
    )
    # Quota rows start when a grant is next stored (chain count + open grants); codes held by
    # open grants must be carried now, or a second redemption could be granted after upgrade.
    ops = sa.table(
        "gateway_operations",
        sa.column("key", sa.LargeBinary),
        sa.column("kind", sa.String),
        sa.column("status", sa.String),
        sa.column("decision", sa.Integer),
        sa.column("payload", sa.LargeBinary),
    )
    open_grants = sa.select(ops.c.key, ops.c.payload).where(
        ops.c.kind == "access",
        ops.c.status.in_(("pending", "submitted")),
        ops.c.decision == GRANTED,
    )
    held: dict[bytes, bytes] = {}
    for row in op.get_bind().execute(open_grants):
        ref = bytes(row.payload)[REF_OFFSET : REF_OFFSET + 32]
        if ref != bytes(32):
            held.setdefault(ref, bytes(row.key))
    if held:
        op.bulk_insert(codes, [{"code": c, "access_id": k} for c, k in held.items()])


def downgrade() -> None:
    op.drop_table("gateway_code_reservations")
    op.drop_table("gateway_quota_use")
