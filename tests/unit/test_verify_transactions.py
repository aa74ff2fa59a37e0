"""`audit.verify_transactions`: the signer recovered from a transaction as a node returns it
(`eth_getTransactionByHash`), for every envelope the permissioned endpoint accepts, against
eth-account's own signing; and every way a transaction is not its sender's."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account
from eth_hash.auto import keccak

from audit.verify_transactions import TxInvalidError, check_transaction, recover_sender

KEY = keccak(b"verify transactions unit test key")
SENDER = Account.from_key(KEY).address.lower()
OTHER = Account.from_key(keccak(b"someone else")).address.lower()
CHAIN = 31337
N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

BASE: dict[str, Any] = {
    "nonce": 7,
    "gas": 210_000,
    "to": "0x" + "42" * 20,
    "value": 0,
    "data": "0xdeadbeef" + "00" * 64,
}
ACCESS_LIST = [{"address": "0x" + "11" * 20, "storageKeys": ["0x" + "22" * 32, "0x" + "33" * 32]}]


def as_node_json(tx: dict[str, Any], tx_type: int) -> dict[str, Any]:
    """What a node returns for `tx` signed with KEY."""
    signed = Account.sign_transaction(tx, KEY)
    out: dict[str, Any] = {
        "type": hex(tx_type),
        "nonce": hex(tx["nonce"]),
        "gas": hex(tx["gas"]),
        "to": tx["to"],
        "value": hex(tx["value"]),
        "input": tx["data"],
        "r": hex(signed.r),
        "s": hex(signed.s),
        "v": hex(signed.v),
        "hash": "0x" + bytes(signed.hash).hex(),
        "from": SENDER,
    }
    if "gasPrice" in tx:
        out["gasPrice"] = hex(tx["gasPrice"])
    if tx_type:
        out["chainId"] = hex(tx["chainId"])
        out["yParity"] = hex(signed.v)
        out["accessList"] = tx.get("accessList", [])
    if tx_type == 2:
        out["maxFeePerGas"] = hex(tx["maxFeePerGas"])
        out["maxPriorityFeePerGas"] = hex(tx["maxPriorityFeePerGas"])
    return out


CASES = {
    "legacy EIP-155": ({**BASE, "gasPrice": 0, "chainId": CHAIN}, 0),
    "legacy pre-EIP-155": ({**BASE, "gasPrice": 10**9}, 0),
    "EIP-2930": ({**BASE, "gasPrice": 3, "chainId": CHAIN, "accessList": ACCESS_LIST, "type": 1},
                 1),
    "EIP-1559": ({**BASE, "maxFeePerGas": 5 * 10**9, "maxPriorityFeePerGas": 10**9,
                  "chainId": CHAIN, "accessList": ACCESS_LIST, "type": 2}, 2),
    "contract creation": ({**BASE, "to": None, "maxFeePerGas": 0, "maxPriorityFeePerGas": 0,
                           "chainId": CHAIN, "type": 2}, 2),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_every_accepted_envelope_recovers_to_its_signer(case: str) -> None:
    tx, tx_type = CASES[case]
    if tx["to"] is None:
        tx = {k: v for k, v in tx.items() if k != "to"}
        node = {**as_node_json({**tx, "to": b""}, tx_type), "to": None}
    else:
        node = as_node_json(tx, tx_type)
    signed = recover_sender(node)
    assert signed.signer == SENDER
    assert signed.chain_id == (None if case == "legacy pre-EIP-155" else CHAIN)
    assert check_transaction(node, CHAIN) == (SENDER, None)


def node_tx(**changes: Any) -> dict[str, Any]:
    tx, tx_type = CASES["EIP-1559"]
    return {**as_node_json(tx, tx_type), **changes}


def test_an_impersonated_transaction_without_signature_is_named() -> None:
    sender, why = check_transaction(node_tx(r="0x0", s="0x0"), CHAIN)
    assert sender == SENDER
    assert why == "it carries no signature (r = s = 0)"


def test_a_transaction_whose_from_is_another_account_is_named() -> None:
    sender, why = check_transaction(node_tx(**{"from": OTHER}), CHAIN)
    assert sender == OTHER
    assert why == f"its signature recovers to {SENDER}, not to its sender {OTHER}"


def test_fields_that_are_not_the_signed_transaction_are_named() -> None:
    _, why = check_transaction(node_tx(input="0xdeadbeef"), CHAIN)  # another call, same hash
    assert why == "its signed envelope does not hash to the transaction hash"


def test_a_high_s_twin_is_refused() -> None:
    tx = node_tx()
    twin = node_tx(s=hex(N - int(tx["s"], 16)), yParity=hex(1 - int(tx["yParity"], 16)))
    assert check_transaction(twin, CHAIN)[1] == (
        "its signature is out of range (r, s, or s above n/2)"
    )


def test_a_transaction_of_another_chain_is_named() -> None:
    tx, _ = CASES["legacy EIP-155"]
    node = as_node_json({**tx, "chainId": 1}, 0)
    assert check_transaction(node, CHAIN)[1] == f"it is signed for chain 1, not {CHAIN}"


@pytest.mark.parametrize("tx_type", [3, 4, 0x7E])
def test_envelope_types_the_endpoint_refuses_are_named(tx_type: int) -> None:
    with pytest.raises(TxInvalidError, match=f"type-{tx_type} transaction"):
        recover_sender(node_tx(type=hex(tx_type)))


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"r": None}, "the node gives no r"),
        ({"gas": "0xzz"}, "the node gives an unreadable gas"),
        ({"accessList": "nope"}, "the node gives an unreadable accessList"),
        ({"yParity": "0x5"}, "y-parity 5 is not 0 or 1"),
    ],
)
def test_malformed_node_answers_are_named_not_raised(changes: dict[str, Any], why: str) -> None:
    assert check_transaction(node_tx(**changes), CHAIN)[1] == why


def test_a_missing_transaction_is_named() -> None:
    assert check_transaction(None, CHAIN) == (None, "the node has no such transaction")
