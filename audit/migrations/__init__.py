"""Alembic migrations of the audit store; `migrate(url)` brings any store to the head revision.

The migration scripts live next to this file, so an installed package migrates with no
alembic.ini. The version table is `audit_alembic_version`: a PostgreSQL database shared with
another service never mixes their revision histories.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

from audit.store import create_store_engine

VERSION_TABLE = "audit_alembic_version"


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent))
    config.attributes["engine"] = engine
    return config


def migrate(target: str | Engine, revision: str = "head") -> None:
    """Upgrades the store at `target` (URL or engine) to `revision`."""
    engine = create_store_engine(target) if isinstance(target, str) else target
    try:
        command.upgrade(alembic_config(engine), revision)
    finally:
        if isinstance(target, str):
            engine.dispose()


def downgrade(target: str | Engine, revision: str = "base") -> None:
    engine = create_store_engine(target) if isinstance(target, str) else target
    try:
        command.downgrade(alembic_config(engine), revision)
    finally:
        if isinstance(target, str):
            engine.dispose()
