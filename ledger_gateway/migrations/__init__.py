"""Alembic migrations of the gateway's tables, run at start-up by `migrate(url)`.

The gateway keeps its own version table (`gateway_alembic_version`) so it can share one
PostgreSQL database with the audit service without either touching the other's history.

A new, empty database is built from the schema snapshot in `schema/` (`dul.schema_snapshot`:
what the revisions build, in one transaction, without loading Alembic); only a database behind
it replays revisions. After adding a revision, rewrite the snapshots:
`python -m ledger_gateway.migrations postgresql+psycopg://…` (a role that may create
databases; `pg_dump` on the PATH).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from dul import schema_snapshot
from ledger_gateway.store import make_engine

if TYPE_CHECKING:
    from alembic.config import Config

VERSION_TABLE = "gateway_alembic_version"
SCRIPT_LOCATION = str(Path(__file__).resolve().parent)
SNAPSHOTS = Path(__file__).parent / "schema"


def config(url: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(url: str, *, engine: Engine | None = None) -> None:
    """Bring the database at `url` to the newest revision (idempotent)."""
    owned = engine is None
    engine = engine or make_engine(url)
    try:
        if not schema_snapshot.at_snapshot(engine, SNAPSHOTS, VERSION_TABLE):  # a new one: built
            replay(url, engine=engine)  # behind the snapshot
    finally:
        if owned:
            engine.dispose()


def replay(url: str, revision: str = "head", *, engine: Engine | None = None) -> None:
    """Upgrades by running the revisions, even on an empty database (how the snapshots are
    written, and what they are compared with)."""
    from alembic import command  # only a database behind the snapshot needs Alembic

    owned = engine is None
    engine = engine or make_engine(url)
    try:
        with engine.connect() as conn:
            cfg = config(url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
            conn.commit()
    finally:
        if owned:
            engine.dispose()
