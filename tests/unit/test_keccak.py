"""dul.keccak is Ethereum's keccak256: the same digests as eth-hash's backend, and the
known empty-input digest."""

from __future__ import annotations

import os

from eth_hash.auto import keccak as eth_keccak

from dul.keccak import keccak

EMPTY = bytes.fromhex("c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470")


def test_digests_match_eth_hash() -> None:
    assert keccak(b"") == EMPTY
    for size in (0, 1, 31, 32, 135, 136, 137, 544, 10_000):
        data = os.urandom(size)
        assert keccak(data) == eth_keccak(data)
        assert keccak(bytearray(data)) == eth_keccak(data)


def test_the_per_access_paths_hash_with_it() -> None:
    """Each access's digest is hashed where a request is checked, recorded and verified:
    eth-hash's backend costs ~4x as much a call (audit verify spent a quarter of its time there)."""
    import audit.verify
    import audit.verify_transactions
    import dul.chain.rpc_filter
    import dul.contracts.typed_data
    import dul.recovery
    import dul.signing
    import ledger_gateway.service
    import ledger_gateway.submitter

    for module in (audit.verify, audit.verify_transactions, dul.chain.rpc_filter,
                   dul.contracts.typed_data, dul.recovery, dul.signing,
                   ledger_gateway.service):  # fmt: skip
        assert vars(module)["keccak"] is keccak, module.__name__
    assert vars(ledger_gateway.submitter)["fast_keccak"] is keccak
