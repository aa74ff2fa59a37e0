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
to 2 s behind), seen up to a block interval (0.2 s) and a poll later."""


def test_a_revert_leaves_the_nodes_clock_on_this_machines(chain: ChainHandle) -> None:
    snapshot = chain.node_rpc("evm_snapshot")
    time.sleep(SINCE_SNAPSHOT_S)
    assert chain.node_rpc("evm_revert", snapshot) is True
    seen = int(chain.node_rpc("eth_blockNumber"), 16)
    stamps: list[tuple[int, float]] = []
    deadline = time.monotonic() + 5
    while len(stamps) < 3 and time.monotonic() < deadline:  # the next blocks, as they come
        block = chain.node_rpc("eth_getBlockByNumber", "latest", False)
        if int(block["number"], 16) > seen:
            seen = int(block["number"], 16)
            stamps.append((int(block["timestamp"], 16), time.time()))
        time.sleep(0.02)
    assert len(stamps) == 3, "the node mined no blocks after the revert"
    for stamp, wall in stamps:
        assert wall - LAG_S <= stamp <= wall, (stamp, wall)
