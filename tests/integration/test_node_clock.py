"""The session's node keeps to this machine's clock through `evm_revert` (`ChainHandle._revert`).

Left alone, anvil goes back to the snapshot's block time and Hardhat's node runs ahead by the
time since the snapshot, each for the rest of the run: later tests on the same node then saw a
consent just recorded not yet in force at the gateway's clock. About 3 s per node (the wait
between the snapshot and the revert must be long enough for either fault to show).
"""

from __future__ import annotations

import time

import pytest

from dul.chain.testing import ChainHandle

pytestmark = [pytest.mark.integration, pytest.mark.every_node]

SINCE_SNAPSHOT_S = 3.0
"""Longer than the widest honest lag below, so that either node's own revert would fail it."""
LAG_S = 2.3
"""A block's time is its mining second rounded down, on an offset set to a whole second (up
to 2 s behind the wall clock, and the moment of setting it)."""


def test_a_revert_leaves_the_nodes_clock_on_this_machines(chain: ChainHandle) -> None:
    snapshot = chain.node_rpc("evm_snapshot")
    time.sleep(SINCE_SNAPSHOT_S)
    assert chain.node_rpc("evm_revert", snapshot) is True
    for _ in range(3):  # blocks mined between two readings of this clock, however slow
        before = time.time()
        chain.node_rpc("evm_mine")
        stamp = int(chain.node_rpc("eth_getBlockByNumber", "latest", False)["timestamp"], 16)
        after = time.time()
        assert before - LAG_S < stamp <= after, (before, stamp, after)
