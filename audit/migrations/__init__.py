"""Alembic migrations of the audit store; `migrate(url)` brings any store to the head revision.

The migration scripts live next to this file, so an installed package migrates with no
alembic.ini. The version table is `audit_alembic_version`: a PostgreSQL database shared with
another service never mixes their revision histories.

A new, empty store is built from the schema snapshot in `schema/` (`dul.schema_snapshot`: what
the revisions build, in one transaction, without loading Alembic); a store at the snapshot's
revision is left as it is; only a store behind it replays revisions. After adding a revision,
rewrite the snapshots: `python -m audit.migrations postgresql+psycopg://…` (a role that may
create databases; `pg_dump` on the PATH).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from audit.store import create_store_engine
from dul import schema_snapshot

if TYPE_CHECKING:
    from alembic.config import Config

VERSION_TABLE = "audit_alembic_version"
SNAPSHOTS = Path(__file__).parent / "schema"


def alembic_config(engine: Engine) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent))
    config.attributes["engine"] = engine
    return config


def migrate(target: str | Engine, revision: str = "head") -> None:
    """Upgrades the store at `target` (URL or engine) to `revision`."""
    engine = create_store_engine(target) if isinstance(target, str) else target
    try:
        # a new store is built from the snapshot, in one step
        if revision == "head" and schema_snapshot.at_snapshot(engine, SNAPSHOTS, VERSION_TABLE):
            return
        replay(engine, revision)  # a store behind the snapshot, or a revision asked for
    finally:
        if isinstance(target, str):
            engine.dispose()


def replay(target: str | Engine, revision: str = "head") -> None:
    """Upgrades by running the revisions, even on an empty store (how the snapshots are
    written, and what they are compared with)."""
    from alembic import command  # only a store behind the snapshot needs Alembic

    engine = create_store_engine(target) if isinstance(target, str) else target
    try:
        command.upgrade(alembic_config(engine), revision)
    finally:
        if isinstance(target, str):
            engine.dispose()


def downgrade(target: str | Engine, revision: str = "base") -> None:
    from alembic import command

    engine = create_store_engine(target) if isinstance(target, str) else target
    try:
        command.downgrade(alembic_config(engine), revision)
    finally:
        if isinstance(target, str):
            engine.dispose()
