"""Several connections opening one brand-new SQLite file at the same instant all end in WAL mode.

SQLite answers "database is locked" at once (no busy handler) to a connection that asks for WAL
while another creates or switches the file; without the retry in `dul.sqlite_wal` these races
failed in about one trial of seven.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from audit.store import create_store_engine
from dul.sqlite_wal import enable_wal
from ledger_gateway.store import make_engine

OPENERS = 6
TRIALS = 40


def _race(prepare: Callable[[Path], Callable[[], str]], tmp_path: Path) -> list[str]:
    """Each trial: OPENERS threads, each with what `prepare` made, open a new file together;
    the journal modes (or errors) they saw."""
    seen: list[str] = []
    for trial in range(TRIALS):
        path = tmp_path / f"trial-{trial}.db"
        start = threading.Barrier(OPENERS)

        def opener(path: Path = path, start: threading.Barrier = start) -> None:
            open_one = prepare(path)
            start.wait()
            try:
                seen.append(open_one())
            except Exception as exc:  # the failure under test: recorded, not raised in a thread
                seen.append(f"error: {exc}")

        threads = [threading.Thread(target=opener) for _ in range(OPENERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return seen


def test_connections_racing_on_a_new_file_all_switch_to_wal(tmp_path: Path) -> None:
    def prepare(path: Path) -> Callable[[], str]:
        def open_one() -> str:
            db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
            try:
                enable_wal(db.cursor(), 30)
                return str(db.execute("PRAGMA journal_mode").fetchone()[0])
            finally:
                db.close()

        return open_one

    assert set(_race(prepare, tmp_path)) == {"wal"}


@pytest.mark.parametrize("store", ["gateway outbox", "audit store"])
def test_engines_racing_on_a_new_file_all_connect(store: str, tmp_path: Path) -> None:
    def prepare(path: Path) -> Callable[[], str]:
        url = f"sqlite:///{path}"
        engine = make_engine(url) if store == "gateway outbox" else create_store_engine(url)

        def open_one() -> str:
            try:
                with engine.connect() as conn:
                    return str(conn.execute(text("PRAGMA journal_mode")).scalar_one())
            finally:
                engine.dispose()

        return open_one

    assert set(_race(prepare, tmp_path)) == {"wal"}


def test_a_lock_that_outlasts_the_timeout_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "held.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        waiter = sqlite3.connect(path, timeout=0, isolation_level=None)
        started = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            enable_wal(waiter.cursor(), 0.2)
        assert 0.1 <= time.monotonic() - started < 5
        waiter.close()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    db = sqlite3.connect(path, isolation_level=None)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # nothing changed
    db.close()


def test_other_errors_are_not_retried(tmp_path: Path) -> None:
    path = tmp_path / "not-a-database.db"
    path.write_bytes(b"this is not a SQLite file" * 100)
    db = sqlite3.connect(path, isolation_level=None)
    started = time.monotonic()
    with pytest.raises(sqlite3.DatabaseError):
        enable_wal(db.cursor(), 30)
    assert time.monotonic() - started < 1
    db.close()


def test_memory_databases_keep_their_mode() -> None:
    db: Any = sqlite3.connect(":memory:")
    enable_wal(db.cursor(), 1)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "memory"
    db.close()
