"""Bytes bound through the registered identity adapter reach SQLite as the same blob."""

from __future__ import annotations

import sqlite3

from dul.sqlite_binds import bind_bytes_directly


class Blob(bytes):
    """A bytes subclass (not the registered type: it takes sqlite3's own path)."""


def test_bytes_are_bound_unchanged_with_the_adapter_registered() -> None:
    bind_bytes_directly()
    bind_bytes_directly()  # idempotent
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (v)")
    values = [b"", b"\0" * 3, bytes(range(256)), Blob(b"sub")]
    db.executemany("INSERT INTO t VALUES (?)", [(v,) for v in values])
    rows = [row[0] for row in db.execute("SELECT v FROM t ORDER BY rowid")]
    assert rows == values
    assert [row[0] for row in db.execute("SELECT typeof(v) FROM t")] == ["blob"] * 4
    db.close()
