"""audit store

Revision ID: 0001
Revises:
Create Date: 2026-11-28 18:48:01.021750
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "access_event",
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("tx_index", sa.Integer(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("access_id", sa.String(), nullable=False),
        sa.Column("tx_hash", sa.String(), nullable=False),
        sa.Column("agreement_id", sa.String(), nullable=False),
        sa.Column("dataset_id", sa.String(), nullable=False),
        sa.Column("requester", sa.String(), nullable=False),
        sa.Column("recorder", sa.String(), nullable=False),
        sa.Column("decision", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Integer(), nullable=False),
        sa.Column("tier", sa.Integer(), nullable=False),
        sa.Column("operation", sa.Integer(), nullable=False),
        sa.Column("field_mask", sa.String(), nullable=False),
        sa.Column("request_hash", sa.String(), nullable=False),
        sa.Column("cohort_root", sa.String(), nullable=False),
        sa.Column("cohort_size", sa.BigInteger(), nullable=False),
        sa.Column("authorization_ref", sa.String(), nullable=False),
        sa.Column("deadline", sa.BigInteger(), nullable=False),
        sa.Column("sig_r", sa.String(), nullable=False),
        sa.Column("sig_s", sa.String(), nullable=False),
        sa.Column("sig_v", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("block_number", "tx_index", "log_index"),
        sa.UniqueConstraint("access_id"),
    )
    op.create_index(
        op.f("ix_access_event_agreement_id"), "access_event", ["agreement_id"], unique=False
    )
    op.create_index(
        op.f("ix_access_event_dataset_id"), "access_event", ["dataset_id"], unique=False
    )
    op.create_index(op.f("ix_access_event_requester"), "access_event", ["requester"], unique=False)
    op.create_table(
        "agreement",
        sa.Column("agreement_id", sa.String(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("previous_id", sa.String(), nullable=True),
        sa.Column("holder_org", sa.String(), nullable=False),
        sa.Column("requester_org", sa.String(), nullable=False),
        sa.Column("digest", sa.String(), nullable=False),
        sa.Column("scenario", sa.Integer(), nullable=False),
        sa.Column(
            "duo_codes",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("disease_code", sa.String(), nullable=False),
        sa.Column("ethics_approval", sa.String(), nullable=False),
        sa.Column("max_tier", sa.Integer(), nullable=False),
        sa.Column("operations", sa.Integer(), nullable=False),
        sa.Column("valid_from", sa.BigInteger(), nullable=False),
        sa.Column("valid_until", sa.BigInteger(), nullable=False),
        sa.Column("quota", sa.BigInteger(), nullable=False),
        sa.Column("consent_policy", sa.Integer(), nullable=False),
        sa.Column("terms_hash", sa.String(), nullable=False),
        sa.Column("nonce", sa.String(), nullable=False),
        sa.Column("deadline", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("tx_index", sa.Integer(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("tx_hash", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("agreement_id"),
    )
    op.create_index(op.f("ix_agreement_block_number"), "agreement", ["block_number"], unique=False)
    op.create_index(op.f("ix_agreement_holder_org"), "agreement", ["holder_org"], unique=False)
    op.create_index(op.f("ix_agreement_previous_id"), "agreement", ["previous_id"], unique=False)
    op.create_index(
        op.f("ix_agreement_requester_org"), "agreement", ["requester_org"], unique=False
    )
    op.create_index(op.f("ix_agreement_status"), "agreement", ["status"], unique=False)
    op.create_table(
        "agreement_dataset",
        sa.Column("agreement_id", sa.String(), nullable=False),
        sa.Column("dataset_id", sa.String(), nullable=False),
        sa.Column("field_mask", sa.String(), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("agreement_id", "dataset_id"),
    )
    op.create_index(
        op.f("ix_agreement_dataset_block_number"),
        "agreement_dataset",
        ["block_number"],
        unique=False,
    )
    op.create_index(
        op.f("ix_agreement_dataset_dataset_id"), "agreement_dataset", ["dataset_id"], unique=False
    )
    op.create_table(
        "agreement_signature",
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("tx_index", sa.Integer(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("agreement_id", sa.String(), nullable=False),
        sa.Column("signer", sa.String(), nullable=False),
        sa.Column("party", sa.Integer(), nullable=False),
        sa.Column("signature", sa.String(), nullable=False),
        sa.Column("tx_hash", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("block_number", "tx_index", "log_index"),
    )
    op.create_index(
        op.f("ix_agreement_signature_agreement_id"),
        "agreement_signature",
        ["agreement_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_agreement_signature_signer"), "agreement_signature", ["signer"], unique=False
    )
    op.create_table(
        "agreement_status_change",
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("tx_index", sa.Integer(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("agreement_id", sa.String(), nullable=False),
        sa.Column("event", sa.String(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("by_account", sa.String(), nullable=True),
        sa.Column("reason", sa.String(), nullable=True),
        sa.Column("related_agreement", sa.String(), nullable=True),
        sa.Column("tx_hash", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("block_number", "tx_index", "log_index"),
    )
    op.create_index(
        op.f("ix_agreement_status_change_agreement_id"),
        "agreement_status_change",
        ["agreement_id"],
        unique=False,
    )
    op.create_table(
        "block",
        sa.Column("number", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.String(), nullable=False),
        sa.Column("parent_hash", sa.String(), nullable=True),
        sa.Column("timestamp", sa.BigInteger(), nullable=True),
        sa.Column("events", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("number"),
    )
    op.create_table(
        "checkpoint",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "contracts",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("block_hash", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "dataset",
        sa.Column("dataset_id", sa.String(), nullable=False),
        sa.Column("holder_org", sa.String(), nullable=False),
        sa.Column("schema_ref", sa.String(), nullable=False),
        sa.Column("max_tier", sa.Integer(), nullable=False),
        sa.Column("field_count", sa.Integer(), nullable=False),
        sa.Column(
            "fields",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("tx_index", sa.Integer(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("tx_hash", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("dataset_id"),
    )
    op.create_index(op.f("ix_dataset_block_number"), "dataset", ["block_number"], unique=False)
    op.create_index(op.f("ix_dataset_holder_org"), "dataset", ["holder_org"], unique=False)
    op.create_table(
        "event",
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("tx_index", sa.Integer(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("tx_hash", sa.String(), nullable=False),
        sa.Column("block_hash", sa.String(), nullable=False),
        sa.Column("contract", sa.String(), nullable=False),
        sa.Column("address", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column(
            "args",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("block_number", "tx_index", "log_index"),
    )
    op.create_table(
        "member_role",
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("tx_index", sa.Integer(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.String(), nullable=False),
        sa.Column("account", sa.String(), nullable=False),
        sa.Column("role", sa.Integer(), nullable=False),
        sa.Column("granted", sa.Boolean(), nullable=False),
        sa.Column("tx_hash", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("block_number", "tx_index", "log_index"),
    )
    op.create_index(op.f("ix_member_role_account"), "member_role", ["account"], unique=False)
    op.create_index(op.f("ix_member_role_org_id"), "member_role", ["org_id"], unique=False)
    op.create_table(
        "organization",
        sa.Column("org_id", sa.String(), nullable=False),
        sa.Column("kind", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("tx_index", sa.Integer(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("tx_hash", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("org_id"),
    )
    op.create_index(
        op.f("ix_organization_block_number"), "organization", ["block_number"], unique=False
    )
    op.create_index(op.f("ix_organization_status"), "organization", ["status"], unique=False)
    op.create_table(
        "organization_status_change",
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("tx_index", sa.Integer(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.String(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("by_account", sa.String(), nullable=False),
        sa.Column("tx_hash", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("block_number", "tx_index", "log_index"),
    )
    op.create_index(
        op.f("ix_organization_status_change_org_id"),
        "organization_status_change",
        ["org_id"],
        unique=False,
    )
    op.create_table(
        "reorg",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("detected_at", sa.Float(), nullable=False),
        sa.Column("checkpoint_number", sa.BigInteger(), nullable=False),
        sa.Column("checkpoint_hash", sa.String(), nullable=False),
        sa.Column("node_hash", sa.String(), nullable=True),
        sa.Column("ancestor_number", sa.BigInteger(), nullable=False),
        sa.Column("removed_events", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "result_release",
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("tx_index", sa.Integer(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("access_id", sa.String(), nullable=False),
        sa.Column("agreement_id", sa.String(), nullable=False),
        sa.Column("result_hash", sa.String(), nullable=False),
        sa.Column("kind", sa.Integer(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("recorder", sa.String(), nullable=False),
        sa.Column("tx_hash", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("block_number", "tx_index", "log_index"),
    )
    op.create_index(
        op.f("ix_result_release_access_id"), "result_release", ["access_id"], unique=False
    )
    op.create_index(
        op.f("ix_result_release_agreement_id"), "result_release", ["agreement_id"], unique=False
    )
    op.create_index(
        op.f("ix_result_release_result_hash"), "result_release", ["result_hash"], unique=False
    )


def downgrade() -> None:

    op.drop_index(op.f("ix_result_release_result_hash"), table_name="result_release")
    op.drop_index(op.f("ix_result_release_agreement_id"), table_name="result_release")
    op.drop_index(op.f("ix_result_release_access_id"), table_name="result_release")
    op.drop_table("result_release")
    op.drop_table("reorg")
    op.drop_index(
        op.f("ix_organization_status_change_org_id"), table_name="organization_status_change"
    )
    op.drop_table("organization_status_change")
    op.drop_index(op.f("ix_organization_status"), table_name="organization")
    op.drop_index(op.f("ix_organization_block_number"), table_name="organization")
    op.drop_table("organization")
    op.drop_index(op.f("ix_member_role_org_id"), table_name="member_role")
    op.drop_index(op.f("ix_member_role_account"), table_name="member_role")
    op.drop_table("member_role")
    op.drop_table("event")
    op.drop_index(op.f("ix_dataset_holder_org"), table_name="dataset")
    op.drop_index(op.f("ix_dataset_block_number"), table_name="dataset")
    op.drop_table("dataset")
    op.drop_table("checkpoint")
    op.drop_table("block")
    op.drop_index(
        op.f("ix_agreement_status_change_agreement_id"), table_name="agreement_status_change"
    )
    op.drop_table("agreement_status_change")
    op.drop_index(op.f("ix_agreement_signature_signer"), table_name="agreement_signature")
    op.drop_index(op.f("ix_agreement_signature_agreement_id"), table_name="agreement_signature")
    op.drop_table("agreement_signature")
    op.drop_index(op.f("ix_agreement_dataset_dataset_id"), table_name="agreement_dataset")
    op.drop_index(op.f("ix_agreement_dataset_block_number"), table_name="agreement_dataset")
    op.drop_table("agreement_dataset")
    op.drop_index(op.f("ix_agreement_status"), table_name="agreement")
    op.drop_index(op.f("ix_agreement_requester_org"), table_name="agreement")
    op.drop_index(op.f("ix_agreement_previous_id"), table_name="agreement")
    op.drop_index(op.f("ix_agreement_holder_org"), table_name="agreement")
    op.drop_index(op.f("ix_agreement_block_number"), table_name="agreement")
    op.drop_table("agreement")
    op.drop_index(op.f("ix_access_event_requester"), table_name="access_event")
    op.drop_index(op.f("ix_access_event_dataset_id"), table_name="access_event")
    op.drop_index(op.f("ix_access_event_agreement_id"), table_name="access_event")
    op.drop_table("access_event")
