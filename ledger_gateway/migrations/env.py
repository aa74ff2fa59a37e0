"""Alembic environment: runs on the connection `migrate` hands over (online mode only)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from ledger_gateway.migrations import VERSION_TABLE
from ledger_gateway.store import OPS

target_metadata = OPS.metadata


def run() -> None:
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError("gateway migrations run through ledger_gateway.migrations.migrate")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


run()
