"""A new, empty database built in one step: the schema its migrations leave, per dialect.

Replaying every Alembic revision on an empty store cost the audit indexer a quarter of a
second at start-up (importing Alembic, loading the scripts, SQLite's batch rebuilds) — about
a tenth of a 50,000-event catch-up. A service keeps, next to its migrations, one SQL file per
dialect (`sqlite.sql`, `postgresql.sql`) holding the schema the migrations built on an empty
database, the version table and its row included; `ensure` runs it in one transaction when
the version table is missing and otherwise only reads the revision, so Alembic is loaded only
for a store that is behind. The files are written from a migrated database (`write`, never by
hand: SQLite's own DDL text, `pg_dump` for PostgreSQL), and a test builds a store both ways
and compares the catalogs, so a migration without a new snapshot fails CI.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from sqlalchemy import Connection, Engine, text

HEADER: Final = "-- revision: "
"""The first line of a snapshot names the revision it was written at."""
_SEPARATOR: Final = ";\n"


def snapshot_path(directory: Path, dialect: str) -> Path:
    return directory / f"{dialect}.sql"


def snapshot_revision(directory: Path, dialect: str = "sqlite") -> str:
    """The revision the snapshots in `directory` were written at."""
    with snapshot_path(directory, dialect).open(encoding="utf-8") as file:
        first = file.readline().strip()
    if not first.startswith(HEADER):
        raise ValueError(f"{snapshot_path(directory, dialect)} names no revision")
    return first.removeprefix(HEADER)


def stored_revision(conn: Connection, version_table: str) -> str | None:
    """The revision the database is at: None without the version table, "" with several."""
    if conn.dialect.name == "sqlite":
        exists = conn.execute(
            text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = :t"),
            {"t": version_table},
        ).first()
    else:  # the schema the connection's search path resolves names in
        exists = conn.execute(text("SELECT to_regclass(:t)"), {"t": version_table}).scalar()
    if not exists:
        return None
    rows = conn.execute(text(f"SELECT version_num FROM {version_table}")).all()  # noqa: S608 - fixed name
    return str(rows[0][0]) if len(rows) == 1 else ""


def ensure(engine: Engine, directory: Path, version_table: str) -> str:
    """Builds the schema of `directory`'s snapshot when the database has no version table
    (one transaction: a crash leaves it empty), and returns the revision it is at.

    Two processes creating one new store at once: the second waits for the first (SQLite's
    write lock, a PostgreSQL advisory lock), then finds the version table and reads it."""
    with engine.connect() as conn:
        found = stored_revision(conn, version_table)
    if found is not None:
        return found
    script = snapshot_path(directory, engine.dialect.name).read_text(encoding="utf-8")
    if engine.dialect.name == "sqlite":
        return _ensure_sqlite(engine, script, version_table)
    lock = {"k": zlib.crc32(version_table.encode())}
    with engine.connect() as conn:
        # A session lock, then a transaction of its own: one begun before the lock was
        # granted would not see the table another opener just made (its cached lookup).
        conn.execute(text("SELECT pg_advisory_lock(:k)"), lock)
        conn.commit()
        try:
            with conn.begin():
                found = stored_revision(conn, version_table)
                if found is None:
                    conn.exec_driver_sql(script)  # no parameters: one round trip for all
                    found = stored_revision(conn, version_table)
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), lock)
            conn.commit()
    return found or ""


def at_snapshot(engine: Engine, directory: Path, version_table: str) -> bool:
    """`ensure`, then whether the database is at the snapshot's revision (False: behind it,
    its revisions to replay)."""
    return ensure(engine, directory, version_table) == snapshot_revision(directory)


def _ensure_sqlite(engine: Engine, script: str, version_table: str) -> str:
    # On the driver's connection: the write lock taken before the check (BEGIN IMMEDIATE),
    # whatever transaction hooks the engine has; the sqlite3 module leaves DDL in it.
    raw = engine.raw_connection()
    try:
        db: Any = raw.driver_connection
        db.execute("BEGIN IMMEDIATE")
        try:
            exists = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (version_table,)
            ).fetchone()
            if exists is None:
                for statement in _statements(script):
                    db.execute(statement)
            rows = db.execute(f"SELECT version_num FROM {version_table}").fetchall()  # noqa: S608 - fixed name
            db.commit()
        except BaseException:
            db.rollback()
            raise
    finally:
        raw.close()
    return str(rows[0][0]) if len(rows) == 1 else ""


def _statements(script: str) -> list[str]:
    body = "\n".join(line for line in script.splitlines() if not line.startswith("--"))
    return [s.strip() for s in body.split(_SEPARATOR) if s.strip()]


# --- writing a snapshot from a migrated database ---------------------------------------------


def write(engine: Engine, directory: Path, version_table: str) -> Path:
    """Writes the snapshot of `engine`'s dialect from its database, which the migrations just
    built from empty."""
    with engine.connect() as conn:
        revision = stored_revision(conn, version_table)
        if not revision:
            raise ValueError(f"{version_table} names no single revision")
        if engine.dialect.name == "sqlite":
            statements = [
                str(sql)
                for (sql,) in conn.execute(
                    text(
                        "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL "
                        "AND name NOT LIKE 'sqlite_%' ORDER BY type <> 'table', name"
                    )
                )
            ]
        else:
            statements = _pg_dump(engine)
    insert = f"INSERT INTO {version_table} (version_num) VALUES ('{revision}')"  # noqa: S608 - ours
    statements.append(insert)
    for statement in statements:
        if _SEPARATOR in statement:
            raise ValueError(f"a statement of the schema spans ';' lines: {statement[:80]}")
    path = snapshot_path(directory, engine.dialect.name)
    path.write_text(
        f"{HEADER}{revision}\n-- What the migrations build on an empty database, written from "
        "them (dul/schema_snapshot.py), never by hand.\n\n"
        + "".join(s + _SEPARATOR + "\n" for s in statements),
        encoding="utf-8",
    )
    return path


def _pg_dump(engine: Engine) -> list[str]:
    """The schema of a database whose tables are in `public`, names unqualified (a store may
    live in another schema: the search path places them)."""
    url = engine.url
    env = {**os.environ, "PGPASSWORD": url.password or ""}
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        raise FileNotFoundError("pg_dump is not on the PATH (PostgreSQL's client tools)")
    dumped = subprocess.run(
        [pg_dump, "--schema-only", "--no-owner", "--no-privileges", "--no-comments",
         "--host", url.host or "localhost", "--port", str(url.port or 5432),
         "--username", url.username or "", str(url.database)],
        check=True, capture_output=True, text=True, env=env,
    ).stdout  # fmt: skip
    kept = [
        line
        for line in dumped.splitlines()
        if line and not line.startswith(("--", "\\", "SET ", "SELECT pg_catalog.set_config"))
    ]
    body = re.sub(r"\bpublic\.", "", "\n".join(kept) + "\n")
    return [s.strip() for s in body.split(_SEPARATOR) if s.strip()]


def rewrite_main(
    argv: list[str], directory: Path, version_table: str, replay: Callable[[str], None]
) -> None:
    """`python -m <service>.migrations [postgresql+psycopg://…]`: rewrites the snapshots."""
    postgres = argv[1] if len(argv) > 1 else None
    for path in rewrite(directory, version_table, replay, postgres):
        sys.stdout.write(f"{path}\n")


def rewrite(
    directory: Path,
    version_table: str,
    replay: Callable[[str], None],
    postgres_admin_url: str | None,
) -> list[Path]:
    """Rewrites the snapshots in `directory`: `replay(url)` migrates an empty SQLite file
    and, given `postgres_admin_url` (a role that may create databases), a scratch database."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    written = []
    with tempfile.TemporaryDirectory() as scratch:
        url = f"sqlite:///{Path(scratch) / 'schema.db'}"
        replay(url)
        engine = create_engine(url)
        written.append(write(engine, directory, version_table))
        engine.dispose()
    if postgres_admin_url:
        name = f"dul_schema_{uuid.uuid4().hex[:12]}"
        admin = create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            url = make_url(postgres_admin_url).set(database=name).render_as_string(False)
            replay(url)
            engine = create_engine(url)
            written.append(write(engine, directory, version_table))
            engine.dispose()
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.dispose()
    return written
