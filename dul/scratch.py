"""A private, throw-away stack for `dul bench`: its own data directory, chain on free ports,
contracts deployed and a small data space, torn down afterwards. Never touches `DUL_HOME`."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from eth_typing import HexStr

from dul.chain.node import ChainNode, ChainStatus
from dul.chain.rpc_auth import OPERATOR_PERMISSIONS
from dul.chain.testing import TEST_OPERATOR_KEY, throwaway_chain_settings
from dul.contracts.deploy import deploy
from dul.contracts.ledger import Ledger, connect
from dul.contracts.world import World
from dul.home import Home
from dul.signing import LocalSigner


@dataclass
class Scratch:
    home: Home
    chain: ChainStatus
    world: World

    @property
    def rpc_url(self) -> str:
        assert self.chain.rpc_url is not None
        return self.chain.rpc_url


@contextlib.contextmanager
def scratch_stack(block_time: float = 0.5, root: Path | None = None) -> Iterator[Scratch]:
    with tempfile.TemporaryDirectory(prefix="dul-bench-", dir=root) as tmp:
        home = Home(Path(tmp)).ensure()
        operator = LocalSigner(HexStr(TEST_OPERATOR_KEY))
        # No state dumps while measuring (as the audit bench's chain): anvil rewrites its whole
        # state every `state_interval` seconds, and at the default 1 s the idle node used 0.20
        # of a core once 20,000 accesses were recorded, 0.36 at 40,000 and 0.45 at 60,000 (a
        # 125 MB file per 20,000), so a figure measured late in a run (the batch API's, after
        # the raw and single ones) lost a third of a core that an early one (the raw node's)
        # did not. A throw-away chain is never resumed.
        settings = throwaway_chain_settings(
            operator=operator.address, block_time=block_time, state_interval=86_400
        )
        node = ChainNode(home, settings)
        status = node.start()
        # Every client of this process and of the services it starts presents the scratch
        # chain's own token (the public RPC wants one on every request).
        previous = os.environ.get("DUL_RPC_TOKEN")
        os.environ["DUL_RPC_TOKEN"] = node.issue_token("bench", OPERATOR_PERMISSIONS, 86_400)
        try:
            assert status.rpc_url is not None
            w3 = connect(status.rpc_url)
            deployment, _ = deploy(w3, operator, home.deployment)
            world = World(Ledger(w3, deployment), operator).build()
            yield Scratch(home, status, world)
        finally:
            node.stop()
            if previous is None:
                os.environ.pop("DUL_RPC_TOKEN", None)
            else:
                os.environ["DUL_RPC_TOKEN"] = previous
