"""consents, authorization codes and cohorts

The ConsentRegistry's events (consent, consent_withdrawal, patient_authorization,
authorization_revocation, authorization_redemption) and the cohorts of accesses checked against
their roots: `cohort` (per access: verified / leaves_unavailable / root_mismatch) and
`cohort_member` (one row per admitted subject with its inclusion proof). The member index leads
with the subject reference and ends with the access position, so a patient's transparency
report reads its rows in chain order straight from the index.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _position() -> list[sa.Column[int]]:
    return [
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("tx_index", sa.Integer(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "consent",
        sa.Column("consent_id", sa.String(), nullable=False),
        sa.Column("holder_org", sa.String(), nullable=False),
        sa.Column("subject", sa.String(), nullable=False),
        sa.Column("scenarios", sa.Integer(), nullable=False),
        sa.Column("duo_codes", _json(), nullable=False),
        sa.Column("valid_from", sa.BigInteger(), nullable=False),
        sa.Column("valid_until", sa.BigInteger(), nullable=False),
        sa.Column("subject_key", sa.String(), nullable=False),
        sa.Column("recorder", sa.String(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        *_position(),
        sa.Column("tx_hash", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("consent_id"),
    )
    op.create_index("ix_consent_subject", "consent", ["subject"])
    op.create_index("ix_consent_block_number", "consent", ["block_number"])

    op.create_table(
        "consent_withdrawal",
        *_position(),
        sa.Column("consent_id", sa.String(), nullable=False),
        sa.Column("holder_org", sa.String(), nullable=False),
        sa.Column("subject", sa.String(), nullable=False),
        sa.Column("by_account", sa.String(), nullable=False),
        sa.Column("by_subject", sa.Boolean(), nullable=False),
        sa.Column("tx_hash", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("block_number", "tx_index", "log_index"),
    )
    op.create_index("ix_consent_withdrawal_consent_id", "consent_withdrawal", ["consent_id"])

    op.create_table(
        "patient_authorization",
        sa.Column("code_hash", sa.String(), nullable=False),
        sa.Column("holder_org", sa.String(), nullable=False),
        sa.Column("subject", sa.String(), nullable=False),
        sa.Column("grantee_org", sa.String(), nullable=False),
        sa.Column("dataset_id", sa.String(), nullable=False),
        sa.Column("field_mask", sa.String(), nullable=False),
        sa.Column("tier", sa.Integer(), nullable=False),
        sa.Column("scenario", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("issuer", sa.String(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        *_position(),
        sa.Column("tx_hash", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("code_hash"),
    )
    op.create_index("ix_patient_authorization_subject", "patient_authorization", ["subject"])
    op.create_index(
        "ix_patient_authorization_block_number", "patient_authorization", ["block_number"]
    )

    op.create_table(
        "authorization_revocation",
        *_position(),
        sa.Column("code_hash", sa.String(), nullable=False),
        sa.Column("holder_org", sa.String(), nullable=False),
        sa.Column("by_account", sa.String(), nullable=False),
        sa.Column("tx_hash", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("block_number", "tx_index", "log_index"),
    )
    op.create_index(
        "ix_authorization_revocation_code_hash", "authorization_revocation", ["code_hash"]
    )

    op.create_table(
        "authorization_redemption",
        *_position(),
        sa.Column("code_hash", sa.String(), nullable=False),
        sa.Column("access_id", sa.String(), nullable=False),
        sa.Column("grantee_org", sa.String(), nullable=False),
        sa.Column("tx_hash", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("block_number", "tx_index", "log_index"),
    )
    op.create_index(
        "ix_authorization_redemption_code_hash", "authorization_redemption", ["code_hash"]
    )
    op.create_index(
        "ix_authorization_redemption_access_id", "authorization_redemption", ["access_id"]
    )

    op.create_table(
        "cohort",
        *_position(),
        sa.Column("access_id", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("source", sa.String(), nullable=True),
        sa.Column("leaves", sa.BigInteger(), nullable=False),
        sa.Column("found_root", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("block_number", "tx_index", "log_index"),
        sa.UniqueConstraint("access_id"),
    )

    op.create_table(
        "cohort_member",
        *_position(),
        sa.Column("leaf_index", sa.BigInteger(), nullable=False),
        sa.Column("subject_ref", sa.String(), nullable=False),
        sa.Column("access_id", sa.String(), nullable=False),
        sa.Column("proof", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("block_number", "tx_index", "log_index", "leaf_index"),
    )
    op.create_index(
        "ix_cohort_member_subject_position",
        "cohort_member",
        ["subject_ref", "block_number", "tx_index", "log_index"],
    )


def downgrade() -> None:
    op.drop_index("ix_cohort_member_subject_position", table_name="cohort_member")
    op.drop_table("cohort_member")
    op.drop_table("cohort")
    op.drop_index("ix_authorization_redemption_access_id", table_name="authorization_redemption")
    op.drop_index("ix_authorization_redemption_code_hash", table_name="authorization_redemption")
    op.drop_table("authorization_redemption")
    op.drop_index("ix_authorization_revocation_code_hash", table_name="authorization_revocation")
    op.drop_table("authorization_revocation")
    op.drop_index("ix_patient_authorization_block_number", table_name="patient_authorization")
    op.drop_index("ix_patient_authorization_subject", table_name="patient_authorization")
    op.drop_table("patient_authorization")
    op.drop_index("ix_consent_withdrawal_consent_id", table_name="consent_withdrawal")
    op.drop_table("consent_withdrawal")
    op.drop_index("ix_consent_block_number", table_name="consent")
    op.drop_index("ix_consent_subject", table_name="consent")
    op.drop_table("consent")
