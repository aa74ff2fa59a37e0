"""uint64 columns keep their full range: a deadline of 2**64 - 1 is storable

Deadlines, windows, quotas, versions, release sizes, authorization expiries and block times are
uint64 on chain; a signed 64-bit column (or a 32-bit one: `agreement.version`) made the indexer
die on a value a member signed. They become `audit.uints.Uint`: NUMERIC(78, 0) on PostgreSQL,
`UNSIGNED BLOB` on SQLite (INTEGER while a value fits, 78-digit zero-padded text beyond, read
back as int; see that module). SQLite rebuilds each table (batch mode); the values, all
INTEGER before, stay INTEGER.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 05:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from audit.uints import DIGITS, Uint

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS: dict[str, tuple[tuple[str, type[sa.types.TypeEngine[int]], bool], ...]] = {
    "agreement": (
        ("version", sa.Integer, False),
        ("valid_from", sa.BigInteger, False),
        ("valid_until", sa.BigInteger, False),
        ("quota", sa.BigInteger, False),
        ("deadline", sa.BigInteger, False),
    ),
    "access_event": (("deadline", sa.BigInteger, False),),
    "result_release": (("size", sa.BigInteger, False),),
    "consent": (("valid_from", sa.BigInteger, False), ("valid_until", sa.BigInteger, False)),
    "patient_authorization": (("expires_at", sa.BigInteger, False),),
    "block": (("timestamp", sa.BigInteger, True),),
}
"""table -> (column, its type before, nullable)."""


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for table, columns in COLUMNS.items():
        if not sqlite:
            for name, before, nullable in columns:
                op.alter_column(
                    table, name, type_=Uint(), existing_type=before(),
                    existing_nullable=nullable,
                    postgresql_using=f"{name}::numeric({DIGITS}, 0)",
                )  # fmt: skip
            continue
        with op.batch_alter_table(table, recreate="always") as batch:
            for name, before, nullable in columns:
                batch.alter_column(
                    name, type_=Uint(), existing_type=before(), existing_nullable=nullable
                )
        # Batch mode copies a column whose type changes through CAST(... AS UNSIGNED BLOB),
        # which stores the digits as a BLOB; every value fitted 64 bits: make it INTEGER again.
        for name, _before, _nullable in columns:
            op.execute(
                f'UPDATE "{table}" SET "{name}" = CAST("{name}" AS INTEGER) '  # noqa: S608 - fixed names
                f"WHERE typeof(\"{name}\") = 'blob'"
            )


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for table, columns in COLUMNS.items():
        if not sqlite:
            for name, before, nullable in columns:
                op.alter_column(
                    table, name, type_=before(), existing_type=Uint(),
                    existing_nullable=nullable, postgresql_using=f"{name}::bigint",
                )  # fmt: skip
            continue
        with op.batch_alter_table(table, recreate="always") as batch:
            for name, before, nullable in columns:
                batch.alter_column(
                    name, type_=before(), existing_type=Uint(), existing_nullable=nullable
                )
