"""Switching a SQLite database to write-ahead logging, safely when several connections open a new
file at the same instant.

The switch of a brand-new file needs a moment of exclusive access, and SQLite answers "database
is locked" at once, without calling its busy handler, to a connection that asks while another is
creating the file or switching it: six threads opening one new file together failed this way in
41-51 of 300 trials. Every connection retries the switch until its busy timeout instead.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

FIRST_WAIT_S = 0.001
LONGEST_WAIT_S = 0.05


def enable_wal(cursor: Any, timeout_s: float) -> None:
    """`PRAGMA journal_mode=WAL` on `cursor`'s connection, retried while the file is locked, for
    up to `timeout_s`; raises sqlite3.OperationalError if the database will not take WAL (an
    in-memory database keeps its own mode)."""
    deadline = time.monotonic() + timeout_s
    wait = FIRST_WAIT_S
    while True:
        try:
            mode = str(cursor.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + wait > deadline:
                raise
            time.sleep(wait)
            wait = min(2 * wait, LONGEST_WAIT_S)
            continue
        if mode not in ("wal", "memory"):
            raise sqlite3.OperationalError(f"the database stays in journal mode {mode!r}, not WAL")
        return
