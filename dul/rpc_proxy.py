"""`python -m dul.rpc_proxy`: the process of the permissioned JSON-RPC endpoint that `dul chain
up` starts in front of the node (see `dul.chain.rpc_proxy` for what it admits and refuses).

The proxy is transport and knows no contract; this entry point, above both layers, hands it
the Membership contract's `isAuthorizedSender(address)` selector from the contract bindings,
so `dul.chain` imports nothing from `dul.contracts` (which sits on it).
"""

from __future__ import annotations

from collections.abc import Sequence

from dul.chain.rpc_proxy import main as serve
from dul.contracts.bindings import function


def sender_check() -> bytes:
    """The selector of the view that says whether an address may send transactions."""
    return function("Membership", "isAuthorizedSender").selector


def main(argv: Sequence[str] | None = None) -> None:
    serve(argv, sender_check())


if __name__ == "__main__":
    main()
