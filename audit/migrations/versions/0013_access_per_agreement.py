"""an access is its agreement and request id

AccessLog names an access by (agreementId, requestId): a request id is unique within its
agreement, and the same id under another agreement (a requester reusing it at another hospital)
is another access. `access_event`'s unique key becomes (access_id, agreement_id) — leading with
the id, so look-ups by id alone still use it — and `cohort` keeps one row per access position
(its primary key) without a unique request id. SQLite rebuilds both tables (batch mode); the
unnamed unique constraints of 0001 / 0003 are found through a naming convention.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 22:00:00
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op
from alembic.operations import BatchOperations

from audit.uints import Uint

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CONVENTION = {"uq": "uq_%(table_name)s_%(column_0_name)s"}
_PAIR = "uq_access_event_access_agreement"


@contextmanager
def _batch(table: str) -> Iterator[BatchOperations]:
    """Batch mode over `table`, its uint64 column typed (SQLite reflects `UNSIGNED BLOB` as
    no type at all)."""
    reflect = (sa.Column("deadline", Uint(), nullable=False),) if table == "access_event" else ()
    with op.batch_alter_table(table, naming_convention=_CONVENTION, reflect_args=reflect) as batch:
        yield batch


def _old_name(table: str) -> str:
    """The name of the single-column unique constraint on `access_id`: PostgreSQL's default,
    or the naming convention's under SQLite batch mode (where it had none)."""
    if op.get_bind().dialect.name == "sqlite":
        return f"uq_{table}_access_id"
    return f"{table}_access_id_key"


def upgrade() -> None:
    for table in ("access_event", "cohort"):
        with _batch(table) as batch:
            batch.drop_constraint(_old_name(table), type_="unique")
            if table == "access_event":
                batch.create_unique_constraint(_PAIR, ["access_id", "agreement_id"])


def downgrade() -> None:
    # Fails if the store already holds one request id under two agreements, as it must.
    for table in ("access_event", "cohort"):
        with _batch(table) as batch:
            if table == "access_event":
                batch.drop_constraint(_PAIR, type_="unique")
            batch.create_unique_constraint(_old_name(table), ["access_id"])
