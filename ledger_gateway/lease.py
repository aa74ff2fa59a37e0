"""Exactly one submitter per outbox, however many worker processes share it.

Every worker decides and writes decisions; only the holder of the lease signs and sends. On
SQLite the lease is an exclusive `flock` on a file beside the database; on PostgreSQL a
session advisory lock on a connection kept open for it. Both die with their process (`kill
-9` included: the kernel closes the file, the server sees the connection go), so a waiting
worker takes over at its next try.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

import structlog
from sqlalchemy import Engine, text
from sqlalchemy.engine import Connection, make_url

from dul.home import private_file

log = structlog.get_logger(__name__)

ADVISORY_KEY = int.from_bytes(b"dulsubm1", "big", signed=True)
"""The PostgreSQL advisory lock key of the gateway's submitter lease."""


class SubmitterLease:
    """`acquire()` without blocking; `held()` re-checks; `release()` gives it up."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._fd: int | None = None
        self._conn: Connection | None = None
        database = make_url(str(engine.url)).database
        self._path: Path | None = None
        self._private = False
        """An in-memory SQLite database: nobody else can see it, the lease is ours."""
        if engine.dialect.name == "sqlite":
            if not database or database == ":memory:":
                self._private = True
            else:
                self._path = Path(database + "-submitter.lock")

    @property
    def is_held(self) -> bool:
        return self._fd is not None or self._conn is not None

    def acquire(self) -> bool:
        """Take the lease if nobody holds it; whether this process holds it now."""
        if self.is_held or self._private:
            return True
        if self._path is not None:
            private_file(self._path)
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self._fd = fd
            return True
        conn = self.engine.connect()
        try:
            taken = conn.execute(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_KEY}
            ).scalar_one()
            conn.commit()
        except Exception:
            conn.close()
            raise
        if not taken:
            conn.close()
            return False
        self._conn = conn
        return True

    def held(self) -> bool:
        """Still held: a file lock is until released; an advisory lock while its connection
        lives (a lost connection lost the lock, and another worker may have it now)."""
        if self._conn is None:
            return self._fd is not None or self._private
        try:
            self._conn.execute(text("SELECT 1")).scalar_one()
            self._conn.commit()
            return True
        except Exception as exc:
            log.warning("lease.lost", error=str(exc))
            self.release()
            return False

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_KEY})
                self._conn.commit()
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
