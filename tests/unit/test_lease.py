"""The submitter lease on SQLite: one holder at a time per database file, and the next one
takes it when the holder lets go (a killed holder's file lock goes with its process: see
tests/integration/test_gateway_workers.py)."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import create_engine

from ledger_gateway.lease import SubmitterLease
from ledger_gateway.store import make_engine


def test_one_holder_per_database_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    first, second = SubmitterLease(make_engine(url)), SubmitterLease(make_engine(url))
    other = SubmitterLease(make_engine(f"sqlite:///{tmp_path / 'other.db'}"))
    assert first.acquire()
    assert first.acquire()  # again: still ours
    assert not second.acquire()
    assert other.acquire()  # another outbox has a lease of its own
    assert first.held()
    assert (tmp_path / "gateway.db-submitter.lock").read_text() == f"{os.getpid()}\n"
    assert oct((tmp_path / "gateway.db-submitter.lock").stat().st_mode & 0o777) == "0o600"
    first.release()
    assert not first.held()
    assert second.acquire()
    assert not first.acquire()
    second.release()
    other.release()


def test_an_in_memory_database_is_its_process_own(tmp_path: Path) -> None:
    lease = SubmitterLease(create_engine("sqlite://"))
    assert lease.acquire()
    assert lease.held()
