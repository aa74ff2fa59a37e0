"""The embedded permissioned chain: anvil behind a JSON-RPC proxy that only members may write to.

Use `ChainNode(home, settings).start() / .stop() / .status()` to manage it and `rpc_url(home)`
to find it (env `DUL_RPC_URL` points every component at another EVM node instead).
"""

from dul.chain.node import ChainNode, ChainStatus, find_anvil, read_chain_info, rpc_url
from dul.chain.settings import ChainSettings, ProxySettings

__all__ = [
    "ChainNode",
    "ChainSettings",
    "ChainStatus",
    "ProxySettings",
    "find_anvil",
    "read_chain_info",
    "rpc_url",
]
