"""The embedded chain keeps its files private even in a process that never set the private
umask (a library user, this test session): its state, logs, pid and lock files and its
manifest are 0600 and its directories 0700 (a real node, started and stopped)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from eth_account import Account

from dul.chain.node import ChainNode
from dul.chain.testing import TEST_OPERATOR_KEY, throwaway_chain_settings
from dul.home import Home

pytestmark = pytest.mark.integration


def loose_entries(root: Path) -> tuple[list[str], int]:
    """Entries under `root` that others may read, and how many regular files there are."""
    loose: list[str] = []
    files = 0
    for top, _, names in os.walk(root):
        for path in (Path(top), *(Path(top) / name for name in names)):
            info = path.lstat()
            files += stat.S_ISREG(info.st_mode)
            if not stat.S_ISLNK(info.st_mode) and info.st_mode & 0o077:
                loose.append(f"{path.relative_to(root)} {stat.S_IMODE(info.st_mode):o}")
    return loose, files


def test_a_chain_started_under_a_loose_umask_leaves_only_private_files(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        home = Home(tmp_path / "home").ensure()
        operator = Account.from_key(TEST_OPERATOR_KEY).address
        node = ChainNode(home, throwaway_chain_settings(operator=operator))
        try:
            status = node.start()
            assert status.running
            running, files = loose_entries(home.root)  # as written, before anything tightens
        finally:
            node.stop()
        stopped, _ = loose_entries(home.root)  # the state the node wrote on its way out
    finally:
        os.umask(previous)
    assert files >= 3  # at least the node's logs, pid files and manifest
    assert home.chain_state.exists()
    assert running == []
    assert stopped == []
