"""Raw steward transactions: decoded like eth-account and the node decode them, and relayed
only when they are exactly the call the endpoint stands for."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account
from eth_hash.auto import keccak

from dul.contracts.world import derived_signer
from dul.domain import Tier, slug_id
from ledger_gateway.relay import (
    Expected,
    RelayError,
    check,
    decode_transaction,
    function,
    functions,
)

CHAIN_ID = 31337
REGISTRY = "0x" + "11" * 20
DATASETS = "0x" + "22" * 20
AGREEMENT = keccak(b"agreement")
STEWARD = derived_signer("steward")


def raw_tx(data: bytes, *, to: str = REGISTRY, kind: int = 0, **overrides: Any) -> bytes:
    tx: dict[str, Any] = {
        "to": to,
        "data": data,
        "gas": 200_000,
        "nonce": 7,
        "chainId": CHAIN_ID,
        "value": 0,
    }
    if kind == 0:
        tx["gasPrice"] = 0
    elif kind == 1:
        tx.update(gasPrice=0, accessList=[], type=1)
    else:
        tx.update(maxFeePerGas=0, maxPriorityFeePerGas=0, type=2)
    tx.update(overrides)
    return STEWARD.sign_transaction(tx)


def suspend_data(agreement: bytes = AGREEMENT) -> bytes:
    return function("AgreementRegistry", "suspend").encode(agreement, slug_id("audit"))


def expect(*names: str, agreement: bytes | None = AGREEMENT) -> Expected:
    return Expected(
        contract="AgreementRegistry",
        address=REGISTRY,
        functions=names,
        chain_id=CHAIN_ID,
        id_arg=None if agreement is None else "id",
        id_value=agreement,
    )


@pytest.mark.parametrize("kind", [0, 1, 2])
def test_decode_matches_eth_account(kind: int) -> None:
    data = suspend_data()
    raw = raw_tx(data, kind=kind)
    tx = decode_transaction(raw)
    assert tx.sender == STEWARD.address == Account.recover_transaction(raw)
    assert tx.to is not None
    assert tx.to.lower() == REGISTRY
    assert (tx.nonce, tx.gas, tx.value, tx.chain_id, tx.data) == (7, 200_000, 0, CHAIN_ID, data)
    assert tx.tx_hash == keccak(raw)


def test_the_right_call_passes_with_its_arguments() -> None:
    call = check(decode_transaction(raw_tx(suspend_data())), expect("suspend"))
    assert call.function.name == "suspend"
    assert call.args["id"] == AGREEMENT
    assert call.args["reason"] == slug_id("audit")


@pytest.mark.parametrize(
    ("raw", "expected", "why"),
    [
        (raw_tx(suspend_data()), expect("resume"), "calls suspend"),
        (raw_tx(suspend_data()), expect("propose", "amend", agreement=None), "calls suspend"),
        (raw_tx(suspend_data(keccak(b"other"))), expect("suspend"), "not 0x"),
        (raw_tx(suspend_data(), to=DATASETS), expect("suspend"), "goes to"),
        (raw_tx(suspend_data(), chainId=1), expect("suspend"), "chain 1"),
        (raw_tx(suspend_data(), value=1), expect("suspend"), "wei"),
        (raw_tx(b"\x12\x34\x56\x78"), expect("suspend"), "0x12345678"),
        (raw_tx(suspend_data()[:40]), expect("suspend"), "do not decode"),
        (
            raw_tx(
                function("DatasetRegistry", "registerDataset").encode(
                    AGREEMENT, slug_id("h"), bytes(32), ["a"], Tier.AGGREGATE
                )
            ),
            expect("suspend"),
            "registerDataset",
        ),
    ],
)
def test_anything_else_is_the_wrong_transaction(raw: bytes, expected: Expected, why: str) -> None:
    with pytest.raises(RelayError) as exc:
        check(decode_transaction(raw), expected)
    assert exc.value.code == "wrong_transaction"
    assert exc.value.status == 422
    assert why in exc.value.detail


def test_a_pre_eip155_transaction_is_refused() -> None:
    tx = {"to": REGISTRY, "data": suspend_data(), "gas": 100_000, "gasPrice": 0, "nonce": 0}
    raw = bytes(Account.sign_transaction(tx, keccak(b"dul world steward")).raw_transaction)
    with pytest.raises(RelayError) as exc:
        check(decode_transaction(raw), expect("suspend"))
    assert "replay protection" in exc.value.detail


@pytest.mark.parametrize(
    "raw",
    [b"", b"\x00", b"\xc0", b"\x05\xc0", b"\xf8\x01\x00", raw_tx(suspend_data())[:-3]],
)
def test_malformed_bytes_are_refused_cleanly(raw: bytes) -> None:
    with pytest.raises(RelayError) as exc:
        decode_transaction(raw)
    assert exc.value.code == "malformed_transaction"


def test_a_tampered_transaction_recovers_another_sender() -> None:
    raw = bytearray(raw_tx(suspend_data()))
    raw[-70] ^= 1  # inside the calldata: the signature no longer covers these bytes
    try:
        tx = decode_transaction(bytes(raw))
    except RelayError:
        return
    assert tx.sender != STEWARD.address


def test_the_function_table_covers_the_steward_calls() -> None:
    names = {(f.contract, f.name) for f in functions().values()}
    for name in ("propose", "amend", "sign", "suspend", "resume", "revoke"):
        assert ("AgreementRegistry", name) in names
    assert ("DatasetRegistry", "registerDataset") in names
    # Of the access log, only a steward's review of a break-glass access: never a record.
    assert {f.name for f in functions().values() if f.contract == "AccessLog"} == {
        "reviewBreakGlass"
    }
