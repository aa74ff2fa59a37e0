"""Steward transactions signed elsewhere: decode a raw transaction and check it is the one call
an endpoint relays.

The steward's key never reaches the gateway: the CLI signs `AgreementRegistry.suspend(id, …)`
locally and the gateway only forwards the bytes. Before forwarding, this module makes sure the
bytes are what the path says (the right contract, the right function, the agreement of the
URL, this chain, no value), so a token holder cannot use, say, `/agreements/A/suspend` to slip
in another call. Decoding reuses the permissioned endpoint's strict RLP decoder, so the sender
seen here is the sender the node sees.

    BadRequestError (ledger_gateway.errors)
    └── RelayError            422 malformed_transaction | wrong_transaction
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from eth_abi.abi import decode
from eth_hash.auto import keccak
from eth_typing import ChecksumAddress

from dul.chain.rpc_filter import TxDecodeError, _rlp_list_fields, _uint, decode_raw_transaction
from dul.contracts.bindings import FunctionBinding
from dul.contracts.bindings import functions as contract_functions
from dul.signing import checksum_address
from ledger_gateway.errors import BadRequestError

RELAYED_CONTRACTS = ("AgreementRegistry", "DatasetRegistry", "ConsentRegistry", "AccessLog")
#: Of these, the only functions relayed for stewards (a gateway records accesses itself).
_ONLY: dict[str, frozenset[str]] = {"AccessLog": frozenset({"reviewBreakGlass"})}

# Field positions per transaction type: legacy, EIP-2930, EIP-1559.
_GAS_INDEX = {0: 2, 1: 3, 2: 4}
_VALUE_INDEX = {0: 4, 1: 5, 2: 6}
_DATA_INDEX = {0: 5, 1: 6, 2: 7}


class RelayError(BadRequestError):
    """A signed transaction the gateway will not relay; nothing was sent."""

    code = "malformed_transaction"
    title = "Transaction not relayable"


#: A relayed function: its binding (selector, canonical input types and names, encoder).
FunctionAbi = FunctionBinding


@functools.cache
def functions() -> dict[bytes, FunctionAbi]:
    """Every state-changing function of the relayed contracts, by selector."""
    table: dict[bytes, FunctionAbi] = {}
    for contract in RELAYED_CONTRACTS:
        for fn in contract_functions(contract).values():
            if fn.mutates and (contract not in _ONLY or fn.name in _ONLY[contract]):
                table[fn.selector] = fn
    return table


def function(contract: str, name: str) -> FunctionAbi:
    for fn in functions().values():
        if fn.contract == contract and fn.name == name:
            return fn
    raise LookupError(f"{contract} has no function {name}")


@dataclass(frozen=True)
class SignedTransaction:
    """A decoded, signature-checked raw transaction."""

    raw: bytes
    tx_hash: bytes
    sender: ChecksumAddress
    to: ChecksumAddress | None
    nonce: int
    gas: int
    value: int
    chain_id: int | None
    """None for a legacy transaction without EIP-155 replay protection."""
    data: bytes


def decode_transaction(raw: bytes) -> SignedTransaction:
    """Decode a signed legacy / EIP-2930 / EIP-1559 transaction; `RelayError` when it is not
    one (non-canonical encodings included)."""
    try:
        head = decode_raw_transaction(raw)
        body = raw if head.tx_type == 0 else raw[1:]
        items = _rlp_list_fields(body)
        t = head.tx_type
        gas = _uint(body, items[_GAS_INDEX[t]], "gas")
        value = _uint(body, items[_VALUE_INDEX[t]], "value")
        if t == 0:
            v = _uint(body, items[6], "v")
            chain_id = (v - 35) // 2 if v >= 35 else None
        else:
            chain_id = _uint(body, items[0], "chainId")
    except TxDecodeError as exc:
        raise RelayError(f"not a signed transaction: {exc}") from None
    _, start, end = items[_DATA_INDEX[t]]
    return SignedTransaction(
        raw=raw,
        tx_hash=keccak(raw),
        sender=checksum_address(bytes.fromhex(head.sender[2:])),
        to=None if head.to is None else checksum_address(bytes.fromhex(head.to[2:])),
        nonce=head.nonce,
        gas=gas,
        value=value,
        chain_id=chain_id,
        data=body[start:end],
    )


@dataclass(frozen=True)
class Call:
    """The contract call inside a relayable transaction, with its decoded arguments."""

    tx: SignedTransaction
    function: FunctionAbi
    args: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class Expected:
    """What an endpoint relays: a call of one of `functions` on `contract` at `address`,
    on `chain_id`, with argument `id_arg` equal to `id_value` when given."""

    contract: str
    address: str
    functions: Collection[str]
    chain_id: int
    id_arg: str | None = None
    id_value: bytes | None = None


def _wrong(detail: str) -> RelayError:
    return RelayError(detail, code="wrong_transaction")


def check(tx: SignedTransaction, expected: Expected) -> Call:
    """The call in `tx` if it is what `expected` describes; `RelayError` (wrong_transaction)
    otherwise. Only the shape is checked here: whether the chain accepts it is simulated."""
    if tx.chain_id != expected.chain_id:
        raise _wrong(
            f"transaction is signed for chain {tx.chain_id}, this ledger is chain "
            f"{expected.chain_id} (legacy transactions need EIP-155 replay protection)"
        )
    if tx.to is None or tx.to.lower() != expected.address.lower():
        raise _wrong(f"transaction goes to {tx.to}, not to {expected.contract} {expected.address}")
    if tx.value != 0:
        raise _wrong(f"transaction carries {tx.value} wei; the ledger's calls take none")
    fn = functions().get(tx.data[:4])
    wanted = " or ".join(expected.functions)
    if fn is None or fn.contract != expected.contract or fn.name not in expected.functions:
        called = fn.signature if fn is not None else "0x" + tx.data[:4].hex()
        raise _wrong(f"transaction calls {called}; this endpoint relays {wanted} only")
    try:
        values = decode(list(fn.types), tx.data[4:])
    except Exception as exc:  # eth_abi raises several types for malformed calldata
        raise _wrong(f"arguments of {fn.name} do not decode: {exc}") from None
    args = dict(zip(fn.names, values, strict=True))
    if expected.id_arg is not None:
        value = args.get(expected.id_arg)
        if value != expected.id_value:
            shown = "0x" + value.hex() if isinstance(value, bytes) else repr(value)
            raise _wrong(
                f"transaction's {fn.name} is for {expected.id_arg} {shown}, "
                f"not 0x{(expected.id_value or b'').hex()} of the path"
            )
    return Call(tx, fn, args)
