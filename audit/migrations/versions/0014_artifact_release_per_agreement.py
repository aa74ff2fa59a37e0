"""an artifact's release is its agreement, access and result hash

ArtifactRegistry orders and keys an artifact's releases by (agreementId, accessId, resultHash):
an access is named by its agreement and request id (0013), so one request id and one result
under two agreements (the same federated round at two hospitals) are two releases of one
artifact. `artifact_release_parent`'s primary key gains `agreement_id`. SQLite rebuilds the
table (batch mode); its unnamed primary key is found through a naming convention.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03 01:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLE = "artifact_release_parent"
_CONVENTION = {"pk": "pk_%(table_name)s"}
_OLD = ["artifact_id", "access_id", "result_hash"]


def _pk_name() -> str:
    """PostgreSQL's default name of the primary key, or the convention's under SQLite batch
    mode (where it has none)."""
    return f"pk_{_TABLE}" if op.get_bind().dialect.name == "sqlite" else f"{_TABLE}_pkey"


def _key(columns: list[str]) -> None:
    name = _pk_name()
    with op.batch_alter_table(_TABLE, naming_convention=_CONVENTION) as batch:
        batch.drop_constraint(name, type_="primary")
        batch.create_primary_key(name, columns)


def upgrade() -> None:
    _key([*_OLD, "agreement_id"])


def downgrade() -> None:
    # Fails if an artifact already names one request id and result under two agreements.
    _key(_OLD)
