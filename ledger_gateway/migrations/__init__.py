"""Alembic migrations of the gateway's tables, run at start-up by `migrate(url)`.

The gateway keeps its own version table (`gateway_alembic_version`) so it can share one
PostgreSQL database with the audit service without either touching the other's history.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

from ledger_gateway.store import make_engine

VERSION_TABLE = "gateway_alembic_version"
SCRIPT_LOCATION = str(Path(__file__).resolve().parent)


def config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(url: str, *, engine: Engine | None = None) -> None:
    """Bring the database at `url` to the newest revision (idempotent)."""
    owned = engine is None
    engine = engine or make_engine(url)
    try:
        with engine.connect() as conn:
            cfg = config(url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            conn.commit()
    finally:
        if owned:
            engine.dispose()
