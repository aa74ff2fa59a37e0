"""A new database is built from the schema snapshot of its migrations (`dul.schema_snapshot`),
for the audit store and the gateway's outbox alike: the same catalog as replaying every revision,
on SQLite and PostgreSQL; a database behind still replays; the build is one transaction; two
openers of one new database both succeed."""

from __future__ import annotations

import os
import shutil
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory

import audit.migrations
import ledger_gateway.migrations
from audit.store import create_store_engine
from dul import schema_snapshot
from dul.pg_schema import schema_url
from ledger_gateway.store import make_engine

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@dataclass(frozen=True)
class Service:
    """A service's migrations as these tests drive them."""

    module: ModuleType
    make_engine: Callable[[str], sa.Engine]
    migrate: Callable[[str], None]
    replay: Callable[[str, str], None]  # url, revision
    older: str
    """A revision behind the head, to upgrade from."""

    @property
    def snapshots(self) -> Path:
        return Path(self.module.SNAPSHOTS)

    @property
    def version_table(self) -> str:
        return str(self.module.VERSION_TABLE)

    @property
    def head(self) -> str:
        return schema_snapshot.snapshot_revision(self.snapshots)


SERVICES = {
    "audit": Service(
        audit.migrations,
        create_store_engine,
        lambda url: audit.migrations.migrate(url),
        lambda url, revision: audit.migrations.replay(url, revision),
        "0012",
    ),
    "gateway": Service(
        ledger_gateway.migrations,
        make_engine,
        lambda url: ledger_gateway.migrations.migrate(url),
        lambda url, revision: ledger_gateway.migrations.replay(url, revision),
        "0002",
    ),
}


@pytest.fixture(params=sorted(SERVICES))
def service(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Service:
    return SERVICES[request.param]


def no_replay(monkeypatch: pytest.MonkeyPatch, service: Service) -> None:
    """From here on, any replay of the service's revisions fails the test."""

    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("the revisions were replayed")

    monkeypatch.setattr(service.module, "replay", refuse)


StoreFactory = Callable[[], str]


@pytest.fixture
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Empty store URLs: SQLite files, or schemas of the PostgreSQL test database (the URL's
    search path names it), dropped afterwards."""
    backend = getattr(request, "param", "sqlite")
    base = os.environ.get("DUL_TEST_DATABASE_URL")
    if backend == "postgres" and not base:
        pytest.skip("DUL_TEST_DATABASE_URL is not set (PostgreSQL runs under .ci/run)")
    schemas: list[str] = []

    def make() -> str:
        if backend == "sqlite":
            return f"sqlite:///{tmp_path / f'audit-{uuid.uuid4().hex[:8]}.db'}"
        assert base is not None
        schema = f"snap_{uuid.uuid4().hex[:12]}"
        admin = sa.create_engine(base)
        with admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        admin.dispose()
        schemas.append(schema)
        return schema_url(base, schema)

    yield make
    if schemas:
        assert base is not None
        admin = sa.create_engine(base)
        with admin.begin() as conn:
            for schema in schemas:
                conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.dispose()


def catalog(url: str) -> dict[str, Any]:
    """Everything the database says about its schema, with nothing that differs between two
    equal ones (object ids, file pages, the schema's own name)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                return _sqlite_catalog(conn)
            return _postgres_catalog(conn)
    finally:
        engine.dispose()


def _sqlite_catalog(conn: sa.Connection) -> dict[str, Any]:
    # SQLite keeps each table and index as the text that created it (as ALTER TABLE left it):
    # equal texts are equal columns, types, defaults, keys, constraints and their names.
    out: dict[str, Any] = {
        "master": conn.exec_driver_sql(
            "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
        ).all(),
        "page_size": conn.exec_driver_sql("PRAGMA page_size").scalar(),
    }
    for (table,) in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'table'"):
        out[f"{table} columns"] = conn.exec_driver_sql(f"PRAGMA table_xinfo('{table}')").all()
        out[f"{table} indexes"] = sorted(  # by name, not by the order they were made in
            (*index[1:], conn.exec_driver_sql(f"PRAGMA index_xinfo('{index[1]}')").all())
            for index in conn.exec_driver_sql(f"PRAGMA index_list('{table}')")
        )
        out[f"{table} foreign keys"] = conn.exec_driver_sql(
            f"PRAGMA foreign_key_list('{table}')"
        ).all()
    return out


def _postgres_catalog(conn: sa.Connection) -> dict[str, Any]:
    queries = {
        # Columns by their place among the live ones: a column a revision dropped keeps its
        # number (and its count in relnatts) in the catalog, a gap no snapshot has.
        "relations": "SELECT c.relname, c.relkind, c.relpersistence, "
        "(SELECT count(*) FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 "
        "AND NOT a.attisdropped) "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = current_schema()",
        "columns": "SELECT c.relname, rank() OVER (PARTITION BY a.attrelid ORDER BY a.attnum), "
        "a.attname, format_type(a.atttypid, a.atttypmod), "
        "a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated, "
        "a.attcollation "
        "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
        "WHERE n.nspname = current_schema() AND a.attnum > 0 AND NOT a.attisdropped "
        "AND c.relkind = 'r'",
        "constraints": "SELECT c.relname, k.conname, k.contype, pg_get_constraintdef(k.oid), "
        "k.condeferrable, k.condeferred, k.convalidated "
        "FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema()",
        "indexes": "SELECT c.relname, i.relname, pg_get_indexdef(x.indexrelid) "
        "FROM pg_index x JOIN pg_class c ON c.oid = x.indrelid "
        "JOIN pg_class i ON i.oid = x.indexrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema()",
        "sequences": "SELECT c.relname, format_type(s.seqtypid, NULL), s.seqstart, "
        "s.seqincrement, s.seqmin, s.seqmax, s.seqcache, s.seqcycle, "
        "(SELECT t.relname || '.' || a.attname FROM pg_depend d "
        " JOIN pg_class t ON t.oid = d.refobjid "
        " JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid "
        " WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'a') "
        "FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema()",
    }
    schema = str(conn.exec_driver_sql("SELECT current_schema()").scalar()) + "."
    return {
        name: sorted(
            tuple(v.replace(schema, "") if isinstance(v, str) else v for v in row)
            for row in conn.exec_driver_sql(sql)
        )
        for name, sql in queries.items()
    }


def _versions(url: str, service: Service) -> list[str]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        query = f"SELECT version_num FROM {service.version_table}"  # noqa: S608 - a fixed name
        found = [row[0] for row in conn.exec_driver_sql(query)]
    engine.dispose()
    return found


def test_the_snapshots_are_at_the_head_revision(service: Service) -> None:
    head = ScriptDirectory(str(service.snapshots.parent)).get_current_head()
    for dialect in ("sqlite", "postgresql"):
        assert schema_snapshot.snapshot_revision(service.snapshots, dialect) == head, (
            f"the {dialect} schema snapshot is behind the revisions: rewrite it "
            f"(python -m {service.module.__name__} postgresql+psycopg://…)"
        )


@pytest.mark.parametrize("new_store", BACKENDS, indirect=True)
def test_a_new_database_has_exactly_the_schema_of_the_revisions(
    new_store: StoreFactory, service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    replayed, created, upgraded = new_store(), new_store(), new_store()
    service.replay(replayed, "head")
    service.replay(upgraded, service.older)  # an older database still upgrades by revisions
    service.migrate(upgraded)
    no_replay(monkeypatch, service)  # built without Alembic
    service.migrate(created)
    assert catalog(created) == catalog(replayed)
    assert catalog(upgraded) == catalog(replayed)
    assert _versions(created, service) == _versions(replayed, service) == [service.head]


@pytest.mark.parametrize("new_store", BACKENDS, indirect=True)
def test_a_database_at_the_head_is_left_as_it_is(
    new_store: StoreFactory, service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = new_store()
    service.migrate(url)
    before = catalog(url)
    no_replay(monkeypatch, service)
    service.migrate(url)
    assert catalog(url) == before


def test_an_audit_store_at_the_head_keeps_its_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    audit.migrations.migrate(url)
    engine = create_store_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO block (number, hash, events) VALUES (7, '0x07', 1)")
    audit.migrations.migrate(engine)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT number FROM block").all() == [(7,)]
    engine.dispose()


@pytest.mark.parametrize("new_store", BACKENDS, indirect=True)
def test_a_failed_build_leaves_the_database_empty(
    new_store: StoreFactory, service: Service, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(service.snapshots, broken)
    for script in broken.glob("*.sql"):  # the version row fails after every table is made
        script.write_text(script.read_text().replace("VALUES ('", "VALUES (1, '"))
    engine = service.make_engine(new_store())
    with pytest.raises((sa.exc.DBAPIError, sqlite3.Error)):
        schema_snapshot.ensure(engine, broken, service.version_table)
    assert sa.inspect(engine).get_table_names() == []
    assert schema_snapshot.ensure(engine, service.snapshots, service.version_table) == service.head
    engine.dispose()


@pytest.mark.parametrize("new_store", BACKENDS, indirect=True)
def test_two_openers_of_one_new_database_both_find_it_built(
    new_store: StoreFactory, service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a database opened once already: a new SQLite file's first connections switch it to
    WAL, which can fail for one of several racing at that moment (before any schema)."""
    url = new_store()
    with service.make_engine(url).connect():
        pass
    no_replay(monkeypatch, service)
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def open_() -> None:
        start.wait()
        try:
            service.migrate(url)  # each with an engine of its own
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert _versions(url, service) == [service.head]


def test_the_sqlite_snapshot_is_what_the_revisions_write(tmp_path: Path, service: Service) -> None:
    """Byte for byte: SQLite keeps the DDL text, and the snapshot is that text."""
    written = tmp_path / "written"
    written.mkdir()
    url = f"sqlite:///{tmp_path / 'replayed.db'}"
    service.replay(url, "head")
    engine = sa.create_engine(url)
    path = schema_snapshot.write(engine, written, service.version_table)
    engine.dispose()
    assert path.read_text() == (service.snapshots / "sqlite.sql").read_text()
