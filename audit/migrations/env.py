"""Alembic environment: runs online against the engine `audit.migrations` hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from audit.migrations import VERSION_TABLE
from audit.store import metadata

target_metadata = metadata


def run() -> None:
    engine: Engine = context.config.attributes["engine"]
    with engine.begin() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            version_table=VERSION_TABLE,
            render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters by copy
            compare_type=True,
        )
        context.run_migrations()


run()
