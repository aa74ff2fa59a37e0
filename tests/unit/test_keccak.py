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
