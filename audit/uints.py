"""Unsigned integers of the chain's full width in the audit store (`Uint` columns).

A uint64 (deadlines, windows, quotas, sizes, versions, block times) does not fit a signed 64-bit
column, and the chain holds whatever a member signs. So:

- PostgreSQL: `NUMERIC(78, 0)` (every uint256), read back as `int` by a loader this module
  registers on each connection (psycopg would give `Decimal`).
- SQLite: declared type `UNSIGNED BLOB` — BLOB affinity, so SQLite never converts a value —
  holding an INTEGER when the value fits a signed 64-bit integer (every realistic one: the
  column behaves as before) and otherwise its 78-digit zero-padded decimal TEXT. SQLite orders
  every INTEGER before every TEXT and fixed-width digits in numeric order, so `ORDER BY`,
  `=`, `<`, `>` stay numeric. The `UNSIGNED` converter (`detect_types`) turns both back into
  `int` for every selected column of that declared type.

Writes go around the ORM (executemany, COPY), so the store converts rows with
`sqlite_rows`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.types import UserDefinedType

INT64_MAX = (1 << 63) - 1
DIGITS = 78
"""Decimal digits of 2**256 - 1."""
SQLITE_DECLARED = "UNSIGNED BLOB"
"""No INT, CHAR, CLOB or TEXT in it: BLOB affinity (SQLite's type-affinity rules)."""


class Uint(UserDefinedType[int]):
    """An unsigned integer up to 2**256 - 1, exact on every backend."""

    cache_ok = True

    def get_col_spec(self, **_: Any) -> str:
        return f"NUMERIC({DIGITS}, 0)"


@compiles(Uint, "sqlite")
def _sqlite_uint(_type: Uint, _compiler: Any, **_: Any) -> str:
    return SQLITE_DECLARED


def to_sqlite(value: Any) -> Any:
    """The SQLite spelling of one `Uint` value (None and small ints unchanged)."""
    if isinstance(value, int) and value > INT64_MAX:
        return f"{value:0{DIGITS}d}"
    return value


def sqlite_row(row: tuple[Any, ...], at: Sequence[int]) -> tuple[Any, ...]:
    """`row` with its `Uint` columns (indexes `at`) in their SQLite spelling."""
    if not any(isinstance(row[i], int) and row[i] > INT64_MAX for i in at):
        return row
    out = list(row)
    for i in at:
        out[i] = to_sqlite(out[i])
    return tuple(out)


def sqlite_rows(rows: list[tuple[Any, ...]], at: Sequence[int]) -> list[tuple[Any, ...]]:
    """`rows` with their `Uint` columns in the SQLite spelling: the same list when no value
    is wide (every realistic page), scanned a column at a time (the per-row check cost ~10%
    of a SQLite page write)."""
    for i in at:
        try:  # in C: a Python-level scan of the column cost ~1-2 us per row
            wide = max(map(itemgetter(i), rows), default=0) > INT64_MAX
        except TypeError:  # None or text among the values: looked at one by one
            wide = any(isinstance(v, int) and v > INT64_MAX for v in map(itemgetter(i), rows))
        if wide:
            return [sqlite_row(row, at) for row in rows]
    return rows


def _from_sqlite(raw: bytes) -> int:
    return int(raw)


sqlite3.register_converter(SQLITE_DECLARED.split()[0], _from_sqlite)
SQLITE_CONNECT_ARGS: dict[str, Any] = {"detect_types": sqlite3.PARSE_DECLTYPES}
"""What a SQLite engine over the store passes to `sqlite3.connect` so `Uint` columns read back
as `int`."""


def _numeric_loader() -> type[Any]:
    from psycopg.types.numeric import NumericLoader

    class IntegralNumericLoader(NumericLoader):
        """NUMERIC as `int` when it has no fraction (every `Uint`), `Decimal` otherwise."""

        def load(self, data: Any) -> Any:
            raw = bytes(data)
            if raw.lstrip(b"-").isdigit():
                return int(raw)
            return super().load(data)

    return IntegralNumericLoader


def install(engine: Engine) -> Engine:
    """Reads `Uint` columns as `int` on `engine` (PostgreSQL: a per-connection loader; SQLite
    needs `SQLITE_CONNECT_ARGS` at engine creation)."""
    if engine.dialect.name == "postgresql":
        loader = _numeric_loader()

        @event.listens_for(engine, "connect")
        def _register(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.adapters.register_loader("numeric", loader)

    return engine
